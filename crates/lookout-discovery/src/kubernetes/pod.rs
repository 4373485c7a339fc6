//! `role: pod`: one target per container port, or one per container without ports (the
//! pod's IP alone); init containers too, marked `__meta_kubernetes_pod_container_init`.

use super::types::{ContainerStatus, Node, Pod};
use super::{Labels, add_object_meta, node};
use crate::TargetGroup;
use crate::join_host_port;

/// `ready` condition of the pod, lower-cased (`unknown` without one).
fn ready(p: &Pod) -> String {
    p.status
        .conditions
        .iter()
        .find(|c| c.kind == "Ready")
        .map_or_else(|| "unknown".to_string(), |c| c.status.to_lowercase())
}

/// The pod labels every role that joins pods uses (no namespace: the group has it).
pub(crate) fn pod_labels(p: &Pod) -> Labels {
    let s = &p.status;
    let mut ls = Labels::from([
        ("__meta_kubernetes_pod_ip".into(), s.pod_ip.clone()),
        ("__meta_kubernetes_pod_ready".into(), ready(p)),
        ("__meta_kubernetes_pod_phase".into(), s.phase.clone()),
        (
            "__meta_kubernetes_pod_node_name".into(),
            p.spec.node_name.clone(),
        ),
        ("__meta_kubernetes_pod_host_ip".into(), s.host_ip.clone()),
        ("__meta_kubernetes_pod_uid".into(), p.metadata.uid.clone()),
    ]);
    add_object_meta(&mut ls, "pod", &p.metadata);
    let controller = p
        .metadata
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true));
    if let Some(c) = controller {
        if !c.kind.is_empty() {
            ls.insert(
                "__meta_kubernetes_pod_controller_kind".into(),
                c.kind.clone(),
            );
        }
        if !c.name.is_empty() {
            ls.insert(
                "__meta_kubernetes_pod_controller_name".into(),
                c.name.clone(),
            );
        }
    }
    ls
}

fn container_id(statuses: &[ContainerStatus], name: &str) -> String {
    statuses
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.container_id.clone())
        .unwrap_or_default()
}

/// The pod's group; without a pod IP (starting, evicted) it has neither labels nor targets,
/// as Prometheus's.
pub(crate) fn build(p: &Pod, attach: Option<Option<&Node>>) -> TargetGroup {
    let m = &p.metadata;
    let mut g = TargetGroup {
        source: format!("pod/{}/{}", m.namespace, m.name),
        ..Default::default()
    };
    if p.status.pod_ip.is_empty() {
        return g;
    }
    // With node metadata, a pod on a node not watched (filtered out by a node selector)
    // has no targets, as Prometheus's.
    if let Some(None) = attach {
        return g;
    }
    g.labels = pod_labels(p);
    g.labels
        .insert("__meta_kubernetes_namespace".into(), m.namespace.clone());
    if let Some(n) = attach {
        node::attached(&mut g.labels, n);
    }
    let n_main = p.spec.containers.len();
    for (i, c) in p
        .spec
        .containers
        .iter()
        .chain(&p.spec.init_containers)
        .enumerate()
    {
        let init = i >= n_main;
        let statuses = if init {
            &p.status.init_container_statuses
        } else {
            &p.status.container_statuses
        };
        let base = Labels::from([
            (
                "__meta_kubernetes_pod_container_name".into(),
                c.name.clone(),
            ),
            (
                "__meta_kubernetes_pod_container_id".into(),
                container_id(statuses, &c.name),
            ),
            (
                "__meta_kubernetes_pod_container_image".into(),
                c.image.clone(),
            ),
            (
                "__meta_kubernetes_pod_container_init".into(),
                init.to_string(),
            ),
        ]);
        if c.ports.is_empty() {
            let mut t = base;
            t.insert("__address__".into(), p.status.pod_ip.clone());
            g.targets.push(t);
            continue;
        }
        for port in &c.ports {
            let number = port.container_port.to_string();
            let mut t = base.clone();
            t.insert(
                "__address__".into(),
                join_host_port(&p.status.pod_ip, &number),
            );
            t.insert(
                "__meta_kubernetes_pod_container_port_name".into(),
                port.name.clone(),
            );
            t.insert("__meta_kubernetes_pod_container_port_number".into(), number);
            t.insert(
                "__meta_kubernetes_pod_container_port_protocol".into(),
                port.protocol.clone(),
            );
            g.targets.push(t);
        }
    }
    g
}
