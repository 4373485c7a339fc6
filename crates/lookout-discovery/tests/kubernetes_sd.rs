//! `kubernetes_sd_configs` against a loopback replay of the Kubernetes API (LIST answers
//! shaped as the API reference's, scripted WATCH streams): each role's meta labels, the
//! namespaces and selectors in the URLs, watch events, resumed watches, 410 Gone, broken
//! responses, oversize lines, the object and target caps, the back-off, credentials (files
//! read again before each request) and `tls_config` (the replay behind an HTTPS front).

#[path = "kubernetes/replay.rs"]
mod replay;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use lookout_discovery::{
    Discovery, DiscoveryMetrics, DiscoveryOptions, KubernetesSdConfig, SdConfigs, TargetGroup,
};
use prometheus_client::registry::Registry;
use replay::{Replay, Reply, event, fixture, gone_status};
use serde_json::{Value, json};

type Labels = BTreeMap<String, String>;

struct Run {
    d: Discovery,
    registry: Registry,
}

fn start(yaml: &str, options: DiscoveryOptions) -> Run {
    let cfg: KubernetesSdConfig = serde_yaml_ng::from_str(yaml).expect("config");
    cfg.validate().expect("valid config");
    let metrics = DiscoveryMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let d = Discovery::new(options, metrics, "scrape");
    d.apply(&[(
        "job".to_string(),
        SdConfigs {
            kubernetes: vec![cfg],
            ..Default::default()
        },
    )]);
    Run { d, registry }
}

fn run(replay: &Replay, yaml: &str) -> Run {
    start(
        &format!("api_server: {}\n{yaml}", replay.url()),
        DiscoveryOptions::default(),
    )
}

impl Run {
    async fn wait(&self, what: &str, f: impl Fn(&[TargetGroup]) -> bool) -> Vec<TargetGroup> {
        for _ in 0..500 {
            let g = self.d.groups("job");
            if f(&g) {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "timed out waiting for {what}; groups now {:#?}",
            self.d.groups("job")
        );
    }

    async fn group(&self, source: &str) -> TargetGroup {
        let g = self
            .wait(source, |g| g.iter().any(|g| g.source == source))
            .await;
        g.into_iter().find(|g| g.source == source).unwrap()
    }

    /// The value of a metric sample (`name{labels}` as exposed), 0 when absent.
    fn metric(&self, sample: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    async fn wait_metric(&self, sample: &str, at_least: f64) {
        for _ in 0..500 {
            if self.metric(sample) >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{sample} stayed at {}", self.metric(sample));
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `pairs` with the common prefix `__meta_kubernetes_` written as `~`.
fn meta(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.replacen('~', "__meta_kubernetes_", 1), v.to_string()))
        .collect()
}

fn web_pod_labels() -> Labels {
    meta(&[
        ("~pod_name", "web-7d4b9c8f6-x2x9p"),
        ("~pod_ip", "10.244.1.17"),
        ("~pod_ready", "true"),
        ("~pod_phase", "Running"),
        ("~pod_node_name", "node-a"),
        ("~pod_host_ip", "10.0.0.11"),
        ("~pod_uid", "0b4c2a8e-3f0d-4d7e-9b1a-5c6d7e8f9a01"),
        ("~pod_controller_kind", "ReplicaSet"),
        ("~pod_controller_name", "web-7d4b9c8f6"),
        ("~pod_label_app_kubernetes_io_name", "web"),
        ("~pod_labelpresent_app_kubernetes_io_name", "true"),
        ("~pod_label_pod_template_hash", "7d4b9c8f6"),
        ("~pod_labelpresent_pod_template_hash", "true"),
        ("~pod_annotation_prometheus_io_scrape", "true"),
        ("~pod_annotationpresent_prometheus_io_scrape", "true"),
        (
            "~pod_annotation_kubectl_kubernetes_io_default_container",
            "web",
        ),
        (
            "~pod_annotationpresent_kubectl_kubernetes_io_default_container",
            "true",
        ),
    ])
}

fn web_service_labels() -> Labels {
    meta(&[
        ("~namespace", "default"),
        ("~service_name", "web"),
        ("~service_label_app_kubernetes_io_name", "web"),
        ("~service_labelpresent_app_kubernetes_io_name", "true"),
        ("~service_annotation_prometheus_io_port", "9113"),
        ("~service_annotationpresent_prometheus_io_port", "true"),
    ])
}

#[tokio::test]
async fn pod_role_labels() {
    let replay = Replay::start().await;
    let r = run(&replay, "role: pod");
    let g = r.group("pod/default/web-7d4b9c8f6-x2x9p").await;
    let mut want = web_pod_labels();
    want.insert("__meta_kubernetes_namespace".into(), "default".into());
    assert_eq!(g.labels, want);
    let container = |name: &str, id: &str, image: &str, init: &str| {
        meta(&[
            ("~pod_container_name", name),
            ("~pod_container_id", id),
            ("~pod_container_image", image),
            ("~pod_container_init", init),
        ])
    };
    let with_port = |addr: &str, port: (&str, &str)| {
        let mut t = container("web", "containerd://2222", "nginx:1.25", "false");
        t.extend(meta(&[
            ("~pod_container_port_name", port.0),
            ("~pod_container_port_number", port.1),
            ("~pod_container_port_protocol", "TCP"),
        ]));
        t.insert("__address__".into(), addr.into());
        t
    };
    let mut shipper = container(
        "log-shipper",
        "containerd://3333",
        "fluent/fluent-bit:2.2",
        "false",
    );
    shipper.insert("__address__".into(), "10.244.1.17".into());
    let mut init = container("init-config", "containerd://1111", "busybox:1.36", "true");
    init.insert("__address__".into(), "10.244.1.17".into());
    assert_eq!(
        g.targets,
        vec![
            with_port("10.244.1.17:8080", ("http", "8080")),
            with_port("10.244.1.17:9113", ("metrics", "9113")),
            shipper,
            init,
        ]
    );
    // Another namespace; a pod without an IP has an empty group, as Prometheus's.
    let job = r.group("pod/jobs/batch-job-9xk2m").await;
    assert_eq!(job.labels["__meta_kubernetes_pod_ready"], "false");
    assert_eq!(job.labels["__meta_kubernetes_pod_phase"], "Pending");
    assert!(
        !job.labels
            .contains_key("__meta_kubernetes_pod_controller_kind")
    );
    assert_eq!(job.targets[0]["__address__"], "10.244.1.30");
    assert_eq!(job.targets[0]["__meta_kubernetes_pod_container_id"], "");
    let none = r.group("pod/default/unscheduled").await;
    assert!(
        none.labels.is_empty() && none.targets.is_empty(),
        "{none:?}"
    );
}

#[tokio::test]
async fn service_role_labels() {
    let replay = Replay::start().await;
    let r = run(&replay, "role: service");
    let g = r.group("svc/default/web").await;
    assert_eq!(g.labels, web_service_labels());
    let port = |addr: &str, name: &str, number: &str| {
        let mut t = meta(&[
            ("~service_port_name", name),
            ("~service_port_number", number),
            ("~service_port_protocol", "TCP"),
            ("~service_type", "ClusterIP"),
            ("~service_cluster_ip", "10.96.12.34"),
        ]);
        t.insert("__address__".into(), addr.into());
        t
    };
    assert_eq!(
        g.targets,
        vec![
            port("web.default.svc:80", "http", "80"),
            port("web.default.svc:9113", "metrics", "9113"),
        ]
    );
    let ext = r.group("svc/jobs/payments").await;
    let mut want = meta(&[
        ("~service_port_name", ""),
        ("~service_port_number", "443"),
        ("~service_port_protocol", "TCP"),
        ("~service_type", "ExternalName"),
        ("~service_external_name", "payments.example.org"),
    ]);
    want.insert("__address__".into(), "payments.jobs.svc:443".into());
    assert_eq!(ext.targets, vec![want]);
}

#[tokio::test]
async fn node_role_labels() {
    let replay = Replay::start().await;
    let r = run(&replay, "role: node");
    let g = r.group("node/node-a").await;
    assert_eq!(
        g.labels,
        meta(&[
            ("~node_name", "node-a"),
            ("~node_provider_id", "kind://docker/kind/node-a"),
            ("~node_condition_ready", "true"),
            ("~node_label_kubernetes_io_hostname", "node-a"),
            ("~node_labelpresent_kubernetes_io_hostname", "true"),
            ("~node_label_node_role_kubernetes_io_worker", ""),
            ("~node_labelpresent_node_role_kubernetes_io_worker", "true"),
            ("~node_label_topology_kubernetes_io_zone", "zone-1"),
            ("~node_labelpresent_topology_kubernetes_io_zone", "true"),
            ("~node_annotation_node_alpha_kubernetes_io_ttl", "0"),
            (
                "~node_annotationpresent_node_alpha_kubernetes_io_ttl",
                "true"
            ),
        ])
    );
    let mut want = meta(&[
        ("~node_address_InternalIP", "10.0.0.11"),
        ("~node_address_Hostname", "node-a"),
    ]);
    want.extend(labels(&[
        ("__address__", "10.0.0.11:10250"),
        ("instance", "node-a"),
    ]));
    assert_eq!(g.targets, vec![want]);
}

#[tokio::test]
async fn endpoints_role_joins_pods_and_services() {
    let replay = Replay::start().await;
    let r = run(&replay, "role: endpoints");
    let g = r.group("endpoints/default/web").await;
    let mut want = web_service_labels();
    want.extend(meta(&[
        ("~endpoints_name", "web"),
        ("~endpoints_label_app_kubernetes_io_name", "web"),
        ("~endpoints_labelpresent_app_kubernetes_io_name", "true"),
        (
            "~endpoints_annotation_endpoints_kubernetes_io_last_change_trigger_time",
            "2024-03-01T10:00:05Z",
        ),
        (
            "~endpoints_annotationpresent_endpoints_kubernetes_io_last_change_trigger_time",
            "true",
        ),
    ]));
    assert_eq!(g.labels, want);
    let mut ready = meta(&[
        ("~endpoint_port_name", "http"),
        ("~endpoint_port_protocol", "TCP"),
        ("~endpoint_ready", "true"),
        ("~endpoint_address_target_kind", "Pod"),
        ("~endpoint_address_target_name", "web-7d4b9c8f6-x2x9p"),
        ("~endpoint_node_name", "node-a"),
        ("~pod_container_name", "web"),
        ("~pod_container_image", "nginx:1.25"),
        ("~pod_container_port_name", "http"),
        ("~pod_container_port_number", "8080"),
        ("~pod_container_port_protocol", "TCP"),
        ("~pod_container_init", "false"),
    ]);
    ready.extend(web_pod_labels());
    ready.insert("__address__".into(), "10.244.1.17:8080".into());
    let mut not_ready = meta(&[
        ("~endpoint_port_name", "http"),
        ("~endpoint_port_protocol", "TCP"),
        ("~endpoint_ready", "false"),
        ("~endpoint_hostname", "web-old"),
        ("~endpoint_node_name", "node-b"),
    ]);
    not_ready.insert("__address__".into(), "10.244.2.5:8080".into());
    // The pod's container port that no endpoint port covers.
    let mut uncovered = meta(&[
        ("~pod_container_name", "web"),
        ("~pod_container_image", "nginx:1.25"),
        ("~pod_container_port_name", "metrics"),
        ("~pod_container_port_number", "9113"),
        ("~pod_container_port_protocol", "TCP"),
        ("~pod_container_init", "false"),
    ]);
    uncovered.extend(web_pod_labels());
    uncovered.insert("__address__".into(), "10.244.1.17:9113".into());
    assert_eq!(g.targets, vec![ready, not_ready, uncovered]);
}

#[tokio::test]
async fn endpointslice_role_joins_pods_and_services() {
    let replay = Replay::start().await;
    let r = run(&replay, "role: endpointslice");
    let g = r.group("endpointslice/default/web-abc12").await;
    let mut want = web_service_labels();
    want.extend(meta(&[
        ("~endpointslice_name", "web-abc12"),
        ("~endpointslice_address_type", "IPv4"),
        (
            "~endpointslice_label_endpointslice_kubernetes_io_managed_by",
            "endpointslice-controller.k8s.io",
        ),
        (
            "~endpointslice_labelpresent_endpointslice_kubernetes_io_managed_by",
            "true",
        ),
        ("~endpointslice_label_kubernetes_io_service_name", "web"),
        (
            "~endpointslice_labelpresent_kubernetes_io_service_name",
            "true",
        ),
    ]));
    assert_eq!(g.labels, want);
    let port = [
        ("~endpointslice_port", "8080"),
        ("~endpointslice_port_name", "http"),
        ("~endpointslice_port_protocol", "TCP"),
        ("~endpointslice_port_app_protocol", "http"),
    ];
    let mut ready = meta(&port);
    ready.extend(meta(&[
        ("~endpointslice_endpoint_conditions_ready", "true"),
        ("~endpointslice_endpoint_conditions_serving", "true"),
        ("~endpointslice_endpoint_conditions_terminating", "false"),
        ("~endpointslice_endpoint_node_name", "node-a"),
        ("~endpointslice_endpoint_zone", "zone-1"),
        ("~endpointslice_address_target_kind", "Pod"),
        ("~endpointslice_address_target_name", "web-7d4b9c8f6-x2x9p"),
        ("~pod_container_name", "web"),
        ("~pod_container_image", "nginx:1.25"),
        ("~pod_container_port_name", "http"),
        ("~pod_container_port_number", "8080"),
        ("~pod_container_port_protocol", "TCP"),
        ("~pod_container_init", "false"),
    ]));
    ready.extend(web_pod_labels());
    ready.insert("__address__".into(), "10.244.1.17:8080".into());
    let mut not_ready = meta(&port);
    not_ready.extend(meta(&[
        ("~endpointslice_endpoint_conditions_ready", "false"),
        ("~endpointslice_endpoint_hostname", "web-old"),
        (
            "~endpointslice_endpoint_topology_kubernetes_io_hostname",
            "node-b",
        ),
        (
            "~endpointslice_endpoint_topology_present_kubernetes_io_hostname",
            "true",
        ),
    ]));
    not_ready.insert("__address__".into(), "10.244.2.5:8080".into());
    assert_eq!(g.targets[..2], [ready, not_ready]);
    assert_eq!(g.targets[2]["__address__"], "10.244.1.17:9113");
    assert_eq!(g.targets.len(), 3);
}

#[tokio::test]
async fn ingress_role_labels() {
    let replay = Replay::start().await;
    let r = run(&replay, "role: ingress");
    let g = r.group("ingress/default/web").await;
    assert_eq!(
        g.labels,
        meta(&[
            ("~namespace", "default"),
            ("~ingress_name", "web"),
            ("~ingress_class_name", "nginx"),
            ("~ingress_label_app_kubernetes_io_name", "web"),
            ("~ingress_labelpresent_app_kubernetes_io_name", "true"),
            (
                "~ingress_annotation_nginx_ingress_kubernetes_io_rewrite_target",
                "/"
            ),
            (
                "~ingress_annotationpresent_nginx_ingress_kubernetes_io_rewrite_target",
                "true"
            ),
        ])
    );
    let t = |host: &str, scheme: &str, path: &str| {
        let mut t = meta(&[
            ("~ingress_scheme", scheme),
            ("~ingress_host", host),
            ("~ingress_path", path),
        ]);
        t.insert("__address__".into(), host.into());
        t
    };
    assert_eq!(
        g.targets,
        vec![
            t("shop.example.com", "https", "/"),
            t("shop.example.com", "https", "/api"),
            t("status.example.org", "http", "/"),
        ]
    );
}

#[tokio::test]
async fn attach_metadata_node_adds_the_node_labels_to_pods() {
    let replay = Replay::start().await;
    let r = run(&replay, "role: pod\nattach_metadata: {node: true}");
    let g = r.group("pod/default/web-7d4b9c8f6-x2x9p").await;
    assert_eq!(g.labels["__meta_kubernetes_node_name"], "node-a");
    assert_eq!(
        g.labels["__meta_kubernetes_node_label_topology_kubernetes_io_zone"],
        "zone-1"
    );
    let (lists, _) = replay.calls("nodes");
    assert_eq!(lists.len(), 1, "{:?}", replay.requests());
}

#[tokio::test]
async fn namespaces_selectors_and_credentials_reach_the_api() {
    let replay = Replay::start().await;
    // Endpoints in a listed namespace (`jobs`, with its service) and in one that is not
    // (`kube-system`): asking the whole cluster, or only one namespace, would show here.
    let mut endpoints = fixture("endpoints.json");
    let web = endpoints["items"][0].clone();
    let items = endpoints["items"].as_array_mut().unwrap();
    for (ns, name) in [("jobs", "payments"), ("kube-system", "dns")] {
        let mut e = web.clone();
        e["metadata"]["namespace"] = json!(ns);
        e["metadata"]["name"] = json!(name);
        items.push(e);
    }
    replay.set_list("endpoints", endpoints);
    let yaml = "role: endpoints
namespaces: {names: [jobs, default]}
bearer_token: s3cret
selectors:
  - {role: endpoints, label: 'app.kubernetes.io/name=web'}
  - {role: pod, field: 'status.phase=Running', label: 'tier in (a,b)'}
";
    let r = run(&replay, yaml);
    r.group("endpoints/default/web").await;
    // The watches start once each LIST is in: wait for all six.
    for _ in 0..200 {
        if replay
            .requests()
            .iter()
            .filter(|t| t.contains("watch=1"))
            .count()
            >= 6
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reqs = replay.requests();
    let has = |prefix: &str, query: &[&str]| {
        reqs.iter()
            .any(|t| t.starts_with(&format!("{prefix}?")) && query.iter().all(|q| t.contains(q)))
    };
    for ns in ["default", "jobs"] {
        assert!(
            has(
                &format!("/api/v1/namespaces/{ns}/endpoints"),
                &["labelSelector=app.kubernetes.io%2Fname%3Dweb", "limit=500"]
            ),
            "{reqs:#?}"
        );
        assert!(
            has(
                &format!("/api/v1/namespaces/{ns}/pods"),
                &[
                    "fieldSelector=status.phase%3DRunning",
                    "labelSelector=tier+in+%28a%2Cb%29"
                ]
            ),
            "{reqs:#?}"
        );
        assert!(
            has(&format!("/api/v1/namespaces/{ns}/services"), &[]),
            "{reqs:#?}"
        );
        // The watches carry the selectors and the version of the list.
        assert!(
            has(
                &format!("/api/v1/namespaces/{ns}/endpoints"),
                &[
                    "watch=1",
                    "resourceVersion=3000",
                    "allowWatchBookmarks=true",
                    "labelSelector="
                ]
            ),
            "{reqs:#?}"
        );
    }
    assert!(
        !reqs.iter().any(|t| t.starts_with("/api/v1/endpoints")),
        "{reqs:#?}"
    );
    assert!(replay.authorizations().iter().all(|a| a == "Bearer s3cret"));
    assert!(!replay.authorizations().is_empty());
    // Only the listed namespaces' objects, each joined with its namespace's service.
    let groups = r
        .wait("both namespaces", |g| {
            g.iter().any(|g| g.source == "endpoints/jobs/payments")
        })
        .await;
    let mut sources: Vec<&str> = groups.iter().map(|g| g.source.as_str()).collect();
    sources.sort_unstable();
    assert_eq!(
        sources,
        ["endpoints/default/web", "endpoints/jobs/payments"],
        "{groups:#?}"
    );
    for g in &groups {
        let ns = &g.labels["__meta_kubernetes_namespace"];
        assert_eq!(
            g.source,
            format!(
                "endpoints/{ns}/{}",
                g.labels["__meta_kubernetes_service_name"]
            )
        );
    }
}

fn pod(name: &str, rv: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "resourceVersion": rv, "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "img:1",
                 "ports": [{"name": "m", "containerPort": 9100, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "hostIP": "10.0.0.11",
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn pod_list(rv: &str, pods: &[Value]) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": pods})
}

fn addresses(g: &[TargetGroup]) -> Vec<String> {
    g.iter()
        .flat_map(|g| g.targets.iter().map(|t| t["__address__"].clone()))
        .collect()
}

#[tokio::test]
async fn watch_events_update_the_groups() {
    let replay = Replay::start().await;
    replay.set_list("pods", pod_list("100", &[pod("a", "90", "10.0.0.1")]));
    let r = run(&replay, "role: pod");
    r.wait("a", |g| addresses(g) == ["10.0.0.1:9100"]).await;
    // Watches open once the list is in.
    for _ in 0..100 {
        if !replay.calls("pods").1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replay.push("pods", event("ADDED", &pod("b", "101", "10.0.0.2")));
    r.wait("b added", |g| {
        addresses(g) == ["10.0.0.1:9100", "10.0.0.2:9100"]
    })
    .await;
    replay.push("pods", event("MODIFIED", &pod("a", "102", "10.0.0.3")));
    r.wait("a modified", |g| {
        addresses(g) == ["10.0.0.3:9100", "10.0.0.2:9100"]
    })
    .await;
    replay.push(
        "pods",
        event("BOOKMARK", &json!({"metadata": {"resourceVersion": "150"}})),
    );
    replay.push("pods", event("DELETED", &pod("b", "103", "10.0.0.2")));
    r.wait("b deleted", |g| addresses(g) == ["10.0.0.3:9100"])
        .await;
    assert_eq!(
        r.metric(r#"prometheus_sd_kubernetes_events_total{event="add",role="pod"}"#),
        2.0
    );
    assert_eq!(
        r.metric(r#"prometheus_sd_kubernetes_events_total{event="update",role="pod"}"#),
        1.0
    );
    assert_eq!(
        r.metric(r#"prometheus_sd_kubernetes_events_total{event="delete",role="pod"}"#),
        1.0
    );
    assert_eq!(r.metric("prometheus_sd_kubernetes_failures_total"), 0.0);
    assert_eq!(
        replay.calls("pods").0.len(),
        1,
        "one LIST: {:?}",
        replay.requests()
    );
}

#[tokio::test]
async fn a_closed_watch_resumes_from_the_last_version() {
    let replay = Replay::start().await;
    replay.set_list("pods", pod_list("100", &[pod("a", "90", "10.0.0.1")]));
    replay.script(
        "pods",
        Reply::Close(vec![event("ADDED", &pod("b", "120", "10.0.0.2"))]),
    );
    replay.script(
        "pods",
        Reply::Close(vec![event(
            "BOOKMARK",
            &json!({"kind": "Pod", "metadata": {"resourceVersion": "130"}}),
        )]),
    );
    let r = run(&replay, "role: pod");
    r.wait("b", |g| addresses(g).len() == 2).await;
    for _ in 0..200 {
        if replay.calls("pods").1.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (lists, watches) = replay.calls("pods");
    assert_eq!(lists.len(), 1, "{lists:?}");
    let versions: Vec<&str> = watches
        .iter()
        .map(|w| {
            w.split('&')
                .find_map(|p| p.strip_prefix("resourceVersion="))
                .unwrap()
        })
        .collect();
    assert_eq!(versions[..3], ["100", "120", "130"], "{watches:?}");
    assert_eq!(r.metric("prometheus_sd_kubernetes_failures_total"), 0.0);
}

#[tokio::test]
async fn gone_as_status_or_error_event_lists_again() {
    let replay = Replay::start().await;
    replay.script_list("pods", pod_list("100", &[pod("a", "90", "10.0.0.1")]));
    replay.script_list("pods", pod_list("200", &[pod("b", "190", "10.0.0.2")]));
    replay.set_list("pods", pod_list("300", &[pod("c", "290", "10.0.0.3")]));
    // The watch from 100 answers 410; the one from 200 sends an ERROR event with 410.
    replay.script("pods", Reply::Status(410, gone_status().to_string()));
    replay.script("pods", Reply::Close(vec![event("ERROR", &gone_status())]));
    let r = run(&replay, "role: pod");
    r.wait("c from the third list", |g| {
        addresses(g) == ["10.0.0.3:9100"]
    })
    .await;
    for _ in 0..200 {
        if replay.calls("pods").1.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (lists, watches) = replay.calls("pods");
    assert_eq!(
        lists.len(),
        3,
        "a LIST after each 410: {:?}",
        replay.requests()
    );
    let versions: Vec<&str> = watches
        .iter()
        .map(|w| {
            w.split('&')
                .find_map(|p| p.strip_prefix("resourceVersion="))
                .unwrap()
        })
        .collect();
    assert_eq!(versions, ["100", "200", "300"], "{watches:?}");
    assert_eq!(r.metric("prometheus_sd_kubernetes_failures_total"), 0.0);
}

#[tokio::test]
async fn broken_responses_keep_the_last_good_groups_and_count_failures() {
    let replay = Replay::start().await;
    replay.set_list("pods", pod_list("100", &[pod("a", "90", "10.0.0.1")]));
    replay.script(
        "pods",
        Reply::Close(vec![r#"{"type":"ADDED","object":{"metadata":"#.into()]),
    );
    let r = run(&replay, "role: pod");
    r.wait("a", |g| addresses(g).len() == 1).await;
    replay.fail_list(
        "pods",
        Some((
            500,
            r#"{"kind":"Status","code":500,"message":"etcd timeout"}"#,
        )),
    );
    r.wait_metric("prometheus_sd_kubernetes_failures_total", 2.0)
        .await;
    assert_eq!(addresses(&r.d.groups("job")), ["10.0.0.1:9100"]);
    // A LIST that is not JSON.
    replay.fail_list("pods", Some((200, "<html>proxy error</html>")));
    r.wait_metric("prometheus_sd_kubernetes_failures_total", 3.0)
        .await;
    assert_eq!(addresses(&r.d.groups("job")), ["10.0.0.1:9100"]);
    // Recovery.
    replay.fail_list("pods", None);
    replay.set_list("pods", pod_list("300", &[pod("d", "290", "10.0.0.4")]));
    r.wait("recovered", |g| addresses(g) == ["10.0.0.4:9100"])
        .await;
}

#[tokio::test]
async fn oversize_lines_and_lists_are_refused() {
    let replay = Replay::start().await;
    replay.set_list("pods", pod_list("100", &[pod("a", "90", "10.0.0.1")]));
    let mut big = pod("b", "101", "10.0.0.2");
    big["metadata"]["annotations"] = json!({"blob": "x".repeat(64 << 10)});
    replay.script("pods", Reply::Close(vec![event("ADDED", &big)]));
    let options = DiscoveryOptions {
        max_http_bytes: 16 << 10,
        ..Default::default()
    };
    let r = start(&format!("api_server: {}\nrole: pod", replay.url()), options);
    r.wait("a", |g| addresses(g).len() == 1).await;
    r.wait_metric("prometheus_sd_kubernetes_failures_total", 1.0)
        .await;
    assert_eq!(addresses(&r.d.groups("job")), ["10.0.0.1:9100"]);
    // A list over the size bound is refused too, and the last good groups stay.
    let many: Vec<Value> = (0..200)
        .map(|i| pod(&format!("p{i}"), "1", "10.0.1.1"))
        .collect();
    replay.set_list("pods", pod_list("400", &many));
    r.wait_metric("prometheus_sd_kubernetes_failures_total", 2.0)
        .await;
    assert_eq!(addresses(&r.d.groups("job")), ["10.0.0.1:9100"]);
}

#[tokio::test]
async fn the_object_count_is_bounded() {
    let replay = Replay::start().await;
    let many: Vec<Value> = (0..5)
        .map(|i| pod(&format!("p{i}"), "1", "10.0.1.1"))
        .collect();
    replay.set_list("pods", pod_list("100", &many));
    let options = DiscoveryOptions {
        max_targets_per_source: 3,
        ..Default::default()
    };
    let r = start(&format!("api_server: {}\nrole: pod", replay.url()), options);
    r.wait_metric("prometheus_sd_kubernetes_failures_total", 1.0)
        .await;
    assert!(r.d.groups("job").is_empty());
}

#[tokio::test]
async fn load_balancers_dual_stack_slices_and_unwatched_nodes() {
    let replay = Replay::start().await;
    let svc = json!({
        "metadata": {"name": "lb", "namespace": "default", "resourceVersion": "5"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "loadBalancerIP": "192.0.2.1",
                 "ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example"}, {"ip": "203.0.113.8"}]}}
    });
    replay.set_list(
        "services",
        json!({"kind": "ServiceList", "metadata": {"resourceVersion": "6"}, "items": [svc]}),
    );
    let slice = |name: &str, family: &str, addr: &str| {
        json!({"metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": "lb"}},
               "addressType": family, "endpoints": [{"addresses": [addr]}], "ports": [{"port": 8443}]})
    };
    replay.set_list(
        "endpointslices",
        json!({"metadata": {"resourceVersion": "7"}, "items": [slice("lb-v4", "IPv4", "10.1.0.1"), slice("lb-v6", "IPv6", "fd00::1")]}),
    );
    let r = run(&replay, "role: service");
    let g = r.group("svc/default/lb").await;
    assert_eq!(
        g.targets[0]["__meta_kubernetes_service_loadbalancer_ip"],
        "203.0.113.7,203.0.113.8"
    );
    assert_eq!(
        g.targets[0]["__meta_kubernetes_service_cluster_ip"],
        "10.96.0.9"
    );
    let r = run(&replay, "role: endpointslice");
    let v4 = r.group("endpointslice/default/lb-v4").await;
    assert_eq!(addresses(&[v4]), ["10.1.0.1:8443"]);
    let v6 = r.group("endpointslice/default/lb-v6").await;
    assert!(
        v6.targets.is_empty(),
        "the secondary family has no targets: {v6:?}"
    );
    assert_eq!(v6.labels["__meta_kubernetes_service_name"], "lb");
    // With node metadata, pods on nodes that are not watched (a node selector) have no
    // targets; the node selector reaches the node LIST.
    let r = run(
        &replay,
        "role: pod\nattach_metadata: {node: true}\nselectors: [{role: node, label: pool=gpu}]",
    );
    r.group("pod/default/web-7d4b9c8f6-x2x9p").await;
    let (node_lists, _) = replay.calls("nodes");
    assert!(
        node_lists
            .iter()
            .all(|l| l.contains("labelSelector=pool%3Dgpu")),
        "{node_lists:?}"
    );
    let mut nodes = fixture("nodes.json");
    nodes["items"][0]["metadata"]["name"] = "node-z".into();
    replay.set_list("nodes", nodes);
    let r = run(&replay, "role: pod\nattach_metadata: {node: true}");
    let g = r.group("pod/jobs/batch-job-9xk2m").await;
    assert!(g.targets.is_empty(), "node-a is not known now: {g:?}");
}

#[test]
fn configurations_are_checked_as_prometheus_does() {
    let check = |yaml: &str| {
        serde_yaml_ng::from_str::<KubernetesSdConfig>(yaml)
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate())
    };
    let err = |yaml: &str| check(yaml).unwrap_err();
    assert!(err("api_server: http://k:1").contains("role missing"));
    assert!(err("role: pods").contains("unknown variant"));
    assert!(err("role: pod\nkubeconfig_file: k.yml").contains("not supported"));
    assert!(
        err("role: pod\nkubeconfig_file: k.yml\napi_server: http://k:1").contains("simultaneously")
    );
    assert!(err("role: pod\nbearer_token: x").contains("provide the 'api_server'"));
    assert!(
        err("role: pod\napi_server: http://k\nselectors: [{role: service}]")
            .contains("pod role supports only pod, node selectors")
    );
    assert!(
        err("role: endpoints\napi_server: http://k\nselectors: [{role: pod}, {role: pod}]")
            .contains("duplicated selector role: pod")
    );
    assert!(
        err("role: pod\napi_server: http://k\nbearer_token: a\nbasic_auth: {username: u}")
            .contains("at most one")
    );
    assert!(
        err("role: pod\napi_server: http://k\ntls_config: {server_name: x}")
            .contains("server_name")
    );
    assert!(err("role: pod\napi_server: http://k\noauth2: {}").contains("unknown field"));
    check(
        "role: endpointslice\napi_server: https://k:6443\nnamespaces: {names: [a]}\n\
         selectors: [{role: pod, label: a=b}, {role: service, field: metadata.name=x}]\n\
         attach_metadata: {node: true}\nbearer_token_file: /t\ntls_config: {ca_file: /ca, insecure_skip_verify: false}",
    )
    .unwrap();
    check("role: node").unwrap();
    check("role: pod\nnamespaces: {own_namespace: true}\nselectors: [{role: node, label: x=y}]")
        .unwrap();
    assert!(
        err("role: pod\napi_server: http://k\nnamespaces: {own_namespace: true}")
            .contains("simultaneously")
    );
    assert!(err("role: pod\nattach_metadata: {namespace: true}").contains("not supported"));
}

#[test]
fn label_names_are_sanitised() {
    assert_eq!(
        lookout_discovery::kubernetes::sanitize("app.kubernetes.io/name"),
        "app_kubernetes_io_name"
    );
    assert_eq!(
        lookout_discovery::kubernetes::sanitize("ünï-code"),
        "_n__code"
    );
}

#[tokio::test]
async fn a_list_of_endless_empty_pages_fails_and_is_counted() {
    let replay = Replay::start().await;
    // Every page is empty and says there is more: the LIST gives up after its page bound
    // (100 pages for a small object limit) instead of asking forever.
    replay.set_list(
        "pods",
        json!({"kind": "PodList", "apiVersion": "v1",
               "metadata": {"resourceVersion": "100", "continue": "more"}, "items": []}),
    );
    let options = DiscoveryOptions {
        max_targets_per_source: 10,
        ..Default::default()
    };
    let r = start(&format!("api_server: {}\nrole: pod", replay.url()), options);
    r.wait_metric("prometheus_sd_kubernetes_failures_total", 1.0)
        .await;
    let (lists, _) = replay.calls("pods");
    assert!((100..=200).contains(&lists.len()), "{} pages", lists.len());
    // A server that answers properly again is listed.
    replay.set_list("pods", pod_list("300", &[pod("d", "290", "10.0.0.4")]));
    r.wait("recovered", |g| addresses(g) == ["10.0.0.4:9100"])
        .await;
}

/// Endpoints (or a slice) of `n` addresses and `n` ports: n² targets.
fn endpoints_product(n: usize) -> (Value, Value) {
    let addrs: Vec<Value> = (0..n)
        .map(|i| json!({"ip": format!("10.9.0.{i}")}))
        .collect();
    let ports: Vec<Value> = (0..n).map(|i| json!({"port": 8000 + i})).collect();
    let ips: Vec<String> = (0..n).map(|i| format!("10.9.0.{i}")).collect();
    let meta = json!({"name": "big", "namespace": "default", "resourceVersion": "5"});
    let endpoints = json!({"metadata": {"resourceVersion": "6"}, "items": [
        {"metadata": meta, "subsets": [{"addresses": addrs, "ports": ports}]}]});
    let slices = json!({"metadata": {"resourceVersion": "6"}, "items": [
        {"metadata": meta, "addressType": "IPv4",
         "endpoints": [{"addresses": ips}], "ports": ports}]});
    (endpoints, slices)
}

#[tokio::test]
async fn endpoints_over_the_target_limit_are_refused() {
    let replay = Replay::start().await;
    // 2 addresses × 2 ports = 4 targets, over the limit of 3 (each LIST is within it).
    let (endpoints, slices) = endpoints_product(2);
    replay.set_list("endpoints", endpoints);
    replay.set_list("endpointslices", slices);
    for role in ["endpoints", "endpointslice"] {
        let options = DiscoveryOptions {
            max_targets_per_source: 3,
            ..Default::default()
        };
        let yaml = format!("api_server: {}\nrole: {role}", replay.url());
        let r = start(&yaml, options);
        r.wait_metric("prometheus_sd_kubernetes_failures_total", 1.0)
            .await;
        assert!(r.d.groups("job").is_empty(), "{role}");
    }
    // The default limit (100 000) against a product of 160 000 targets.
    let (endpoints, slices) = endpoints_product(400);
    replay.set_list("endpoints", endpoints);
    replay.set_list("endpointslices", slices);
    for role in ["endpoints", "endpointslice"] {
        let yaml = format!("api_server: {}\nrole: {role}", replay.url());
        let r = start(&yaml, DiscoveryOptions::default());
        r.wait_metric("prometheus_sd_kubernetes_failures_total", 1.0)
            .await;
        assert!(r.d.groups("job").is_empty(), "{role}");
    }
    // Within the limit, the same shape is published.
    let (endpoints, _) = endpoints_product(2);
    replay.set_list("endpoints", endpoints);
    let options = DiscoveryOptions {
        max_targets_per_source: 4,
        ..Default::default()
    };
    let r = start(
        &format!("api_server: {}\nrole: endpoints", replay.url()),
        options,
    );
    let g = r.group("endpoints/default/big").await;
    assert_eq!(g.targets.len(), 4);
}

#[tokio::test]
async fn a_watch_error_with_a_stalled_body_times_out() {
    let replay = Replay::start().await;
    replay.set_list("pods", pod_list("100", &[pod("a", "90", "10.0.0.1")]));
    // The watch answers 500 and never sends the body it announces.
    replay.script("pods", Reply::Stall(500));
    let options = DiscoveryOptions {
        http_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let r = start(&format!("api_server: {}\nrole: pod", replay.url()), options);
    r.wait("a", |g| addresses(g).len() == 1).await;
    // The failure is counted within the HTTP timeout and the resource listed again.
    r.wait_metric("prometheus_sd_kubernetes_failures_total", 1.0)
        .await;
    for _ in 0..200 {
        if replay.calls("pods").0.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(replay.calls("pods").0.len(), 2, "{:?}", replay.requests());
}

/// The LISTs and WATCHes of pods in the first 2.5 s against a server whose watches all
/// answer `reply`.
async fn calls_in_a_short_window(reply: Reply) -> (usize, usize) {
    let replay = Replay::start().await;
    replay.set_list("pods", pod_list("100", &[pod("a", "90", "10.0.0.1")]));
    for _ in 0..1000 {
        replay.script("pods", reply.clone());
    }
    let r = run(&replay, "role: pod");
    r.wait("a", |g| addresses(g).len() == 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (lists, watches) = replay.calls("pods");
    assert_eq!(r.metric("prometheus_sd_kubernetes_failures_total"), 0.0);
    (lists.len(), watches.len())
}

#[tokio::test]
async fn a_server_answering_every_watch_with_gone_is_not_asked_in_a_loop() {
    // LIST, 410, 1 s, LIST, 410, 2 s, LIST, ...: two or three of each in 2.5 s.
    let (lists, watches) =
        calls_in_a_short_window(Reply::Status(410, gone_status().to_string())).await;
    assert!((2..=3).contains(&lists), "{lists} LISTs");
    assert!((2..=3).contains(&watches), "{watches} WATCHes");
}

#[tokio::test]
async fn a_server_closing_every_watch_at_once_is_not_asked_in_a_loop() {
    // Watches that bring nothing wait 1 s, then 2 s: three at most in 2.5 s, one LIST.
    let (lists, watches) = calls_in_a_short_window(Reply::Close(vec![])).await;
    assert_eq!(lists, 1);
    assert!((2..=3).contains(&watches), "{watches} WATCHes");
}

#[tokio::test]
async fn failing_lists_are_retried_after_the_back_off() {
    let replay = Replay::start().await;
    replay.fail_list(
        "pods",
        Some((
            500,
            r#"{"kind":"Status","code":500,"message":"etcd timeout"}"#,
        )),
    );
    let r = run(&replay, "role: pod");
    r.wait_metric("prometheus_sd_kubernetes_failures_total", 1.0)
        .await;
    // LIST, 1 s, LIST, 2 s, LIST, ...: two or three in 2.5 s, each failure counted.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (lists, watches) = replay.calls("pods");
    assert!((2..=3).contains(&lists.len()), "{} LISTs", lists.len());
    assert!(watches.is_empty(), "{watches:?}");
    let failures = r.metric("prometheus_sd_kubernetes_failures_total");
    assert!((2.0..=3.0).contains(&failures), "{failures} failures");
    assert!(r.d.groups("job").is_empty());
}

/// `bearer_token_file` and `basic_auth.password_file` are read again before each request:
/// a rotated secret reaches the next request without a restart.
#[tokio::test]
async fn credential_files_are_read_again_before_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let password = dir.path().join("password");
    let cases = [
        (
            format!("bearer_token_file: {}", token.display()),
            &token,
            ["one\n", "two\n"],
            ["Bearer one", "Bearer two"],
        ),
        (
            format!(
                "basic_auth: {{username: u, password_file: {}}}",
                password.display()
            ),
            &password,
            ["p1\n", "p2\n"],
            // base64 of `u:p1` and `u:p2`.
            ["Basic dTpwMQ==", "Basic dTpwMg=="],
        ),
    ];
    for (auth, file, secrets, want) in cases {
        std::fs::write(file, secrets[0]).unwrap();
        let replay = Replay::start().await;
        replay.set_list("pods", pod_list("100", &[pod("a", "90", "10.0.0.1")]));
        // The first watch ends at once: the next one comes after the 1 s back-off.
        replay.script("pods", Reply::Close(vec![]));
        let r = run(&replay, &format!("role: pod\n{auth}"));
        r.wait("a", |g| addresses(g).len() == 1).await;
        std::fs::write(file, secrets[1]).unwrap();
        for _ in 0..250 {
            if replay.authorizations().iter().any(|a| a == want[1]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = replay.authorizations();
        assert_eq!(seen[0], want[0], "{auth}: {seen:?}");
        assert!(seen.iter().any(|a| a == want[1]), "{auth}: {seen:?}");
        assert!(seen.iter().all(|a| want.contains(&a.as_str())), "{seen:?}");
    }
}

/// A test CA, and certificates it signed for the server (`localhost`) and a client, as
/// PEM files in `dir` (`ca.pem`, `server.pem`/`.key`, `client.pem`/`.key`).
fn pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, san) in [("server", "localhost"), ("client", "client.lookout.test")] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![san.to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// An HTTPS front for the replay server, its TLS side configured as Lookout's own web
/// server (`tls_server_config` lines `tls`): the decrypted bytes of each connection go to
/// the replay server. Its port.
async fn tls_front(replay: &Replay, dir: &Path, tls: &str) -> u16 {
    let yaml = format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{tls}http_server_config:\n  http2: false\n"
    );
    let cfg = lookout_web::WebConfig::parse(&yaml, "web.yml", dir).expect("web config");
    let acceptor = tokio_rustls::TlsAcceptor::from(
        lookout_web::tls::server_config(&cfg).expect("TLS configuration"),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let back = replay.addr;
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut front) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(back).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut front, &mut plain).await;
            });
        }
    });
    port
}

/// `tls_config` against HTTPS API servers: the CA (file or inline), an untrusted server,
/// `insecure_skip_verify`, a client certificate (files or inline) for a server that
/// requires one, and `min_version` against a server that speaks TLS 1.2 only.
#[tokio::test]
async fn tls_config_reaches_https_api_servers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d);
    let replay = Replay::start().await;
    let plain = tls_front(&replay, d, "").await;
    let mtls = tls_front(
        &replay,
        d,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    )
    .await;
    let tls12 = tls_front(&replay, d, "  max_version: TLS12\n").await;
    // A PEM file as a YAML string (JSON's quoting is YAML's).
    let inline = |name: &str| {
        serde_json::to_string(&std::fs::read_to_string(d.join(name)).unwrap()).unwrap()
    };
    let ca_file = format!("ca_file: {}", d.join("ca.pem").display());
    let client_files = format!(
        "{ca_file}, cert_file: {}, key_file: {}",
        d.join("client.pem").display(),
        d.join("client.key").display()
    );
    let client_inline = format!(
        "ca: {}, cert: {}, key: {}",
        inline("ca.pem"),
        inline("client.pem"),
        inline("client.key")
    );
    let cases = [
        ("CA file", plain, ca_file.clone(), true),
        (
            "inline CA",
            plain,
            format!("ca: {}", inline("ca.pem")),
            true,
        ),
        ("untrusted", plain, String::new(), false),
        (
            "insecure_skip_verify",
            plain,
            "insecure_skip_verify: true".into(),
            true,
        ),
        ("client certificate files", mtls, client_files, true),
        ("inline client certificate", mtls, client_inline, true),
        ("no client certificate", mtls, ca_file.clone(), false),
        (
            "TLS 1.2 allowed",
            tls12,
            format!("{ca_file}, min_version: TLS12"),
            true,
        ),
        (
            "TLS 1.3 required",
            tls12,
            format!("{ca_file}, min_version: TLS13"),
            false,
        ),
    ];
    for (what, port, tls, ok) in cases {
        let yaml =
            format!("api_server: https://localhost:{port}\nrole: pod\ntls_config: {{{tls}}}");
        let r = start(&yaml, DiscoveryOptions::default());
        if ok {
            r.group("pod/default/web-7d4b9c8f6-x2x9p").await;
            assert_eq!(
                r.metric("prometheus_sd_kubernetes_failures_total"),
                0.0,
                "{what}"
            );
        } else {
            r.wait_metric("prometheus_sd_kubernetes_failures_total", 1.0)
                .await;
            assert!(r.d.groups("job").is_empty(), "{what}");
        }
    }
}

/// A pod with two container ports: two targets.
fn pod_two_ports(name: &str, ip: &str) -> Value {
    let mut p = pod(name, "1", ip);
    p["spec"]["containers"][0]["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "n", "containerPort": 9200, "protocol": "TCP"}));
    p
}

#[tokio::test]
async fn the_targets_of_all_objects_together_are_bounded() {
    let replay = Replay::start().await;
    // Two pods, four targets: within the limit of five.
    replay.set_list(
        "pods",
        pod_list(
            "100",
            &[
                pod_two_ports("a", "10.0.0.1"),
                pod_two_ports("b", "10.0.0.2"),
            ],
        ),
    );
    let options = DiscoveryOptions {
        max_targets_per_source: 5,
        ..Default::default()
    };
    let r = start(&format!("api_server: {}\nrole: pod", replay.url()), options);
    r.wait("four targets", |g| addresses(g).len() == 4).await;
    for _ in 0..200 {
        if !replay.calls("pods").1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A third pod makes six targets (three objects, within the limit): refused, counted,
    // and the last good groups stay.
    replay.push("pods", event("ADDED", &pod_two_ports("c", "10.0.0.3")));
    r.wait_metric("prometheus_sd_kubernetes_failures_total", 1.0)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        addresses(&r.d.groups("job")),
        [
            "10.0.0.1:9100",
            "10.0.0.1:9200",
            "10.0.0.2:9100",
            "10.0.0.2:9200"
        ]
    );
}

#[tokio::test]
async fn gone_after_an_event_lists_again_at_once() {
    let replay = Replay::start().await;
    replay.set_list("pods", pod_list("100", &[pod("a", "90", "10.0.0.1")]));
    // Ten watches, each bringing an event and then a 410: each is listed again at once
    // (with the back-off, ten LISTs would take 1 + 2 + 4 + ... seconds).
    for i in 0..10 {
        let added = event("ADDED", &pod("b", &(110 + i).to_string(), "10.0.0.2"));
        replay.script(
            "pods",
            Reply::Close(vec![added, event("ERROR", &gone_status())]),
        );
    }
    let r = run(&replay, "role: pod");
    for _ in 0..150 {
        if replay.calls("pods").0.len() >= 11 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (lists, _) = replay.calls("pods");
    assert!(lists.len() >= 11, "{} LISTs in 3 s", lists.len());
    assert_eq!(r.metric("prometheus_sd_kubernetes_failures_total"), 0.0);
}
