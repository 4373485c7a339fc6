//! `role: node`: one target per node, at its preferred address and the kubelet's port;
//! its conditions as `__meta_kubernetes_node_condition_<type>` (lower-cased), as current
//! Prometheus.

use super::types::Node;
use super::{Labels, add_object_meta, sanitize};
use crate::TargetGroup;
use crate::join_host_port;

/// Prometheus's order of preference for the node's address.
const ADDRESS_PREFERENCE: [&str; 6] = [
    "InternalIP",
    "InternalDNS",
    "ExternalIP",
    "ExternalDNS",
    "LegacyHostIP",
    "Hostname",
];

/// `__meta_kubernetes_node_name`, `_provider_id`, labels and annotations.
pub(crate) fn node_labels(n: &Node) -> Labels {
    let mut ls = Labels::new();
    add_object_meta(&mut ls, "node", &n.metadata);
    ls.insert(
        "__meta_kubernetes_node_provider_id".into(),
        n.spec.provider_id.clone(),
    );
    for c in &n.status.conditions {
        ls.insert(
            format!(
                "__meta_kubernetes_node_condition_{}",
                sanitize(&c.kind.to_lowercase())
            ),
            c.status.to_lowercase(),
        );
    }
    ls
}

/// The labels `attach_metadata: {node: true}` adds: the node's name, labels and
/// annotations.
pub(crate) fn attached(ls: &mut Labels, node: Option<&Node>) {
    if let Some(n) = node {
        add_object_meta(ls, "node", &n.metadata);
    }
}

/// The node's group, or `None` when it has no address (Prometheus then sends nothing).
pub(crate) fn build(n: &Node) -> Option<TargetGroup> {
    let mut by_type: Labels = Labels::new();
    for a in &n.status.addresses {
        // The first address of each type, as Prometheus's `addrMap[type][0]`.
        by_type
            .entry(a.kind.clone())
            .or_insert_with(|| a.address.clone());
    }
    let addr = ADDRESS_PREFERENCE
        .iter()
        .find_map(|t| by_type.get(*t))?
        .clone();
    let port = n.status.daemon_endpoints.kubelet_endpoint.port;
    let mut t = Labels::from([
        ("__address__".into(), join_host_port(&addr, port)),
        ("instance".into(), n.metadata.name.clone()),
    ]);
    for (kind, a) in by_type {
        t.insert(
            sanitize(&format!("__meta_kubernetes_node_address_{kind}")),
            a,
        );
    }
    Some(TargetGroup {
        source: format!("node/{}", n.metadata.name),
        targets: vec![t],
        labels: node_labels(n),
    })
}
