//! `role: service`: one target per service port, at `NAME.NAMESPACE.svc:PORT`.

use super::types::Service;
use super::{Labels, add_object_meta};
use crate::TargetGroup;
use crate::join_host_port;

/// `__meta_kubernetes_namespace`, `_service_name`, labels and annotations.
pub(crate) fn service_labels(s: &Service) -> Labels {
    let mut ls = Labels::new();
    add_object_meta(&mut ls, "service", &s.metadata);
    ls.insert(
        "__meta_kubernetes_namespace".into(),
        s.metadata.namespace.clone(),
    );
    ls
}

/// The load balancer's IPs from the status (comma-separated), else `spec.loadBalancerIP`.
fn load_balancer_ips(s: &Service) -> String {
    let ips: Vec<&str> = s
        .status
        .load_balancer
        .ingress
        .iter()
        .map(|i| i.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty() {
        s.spec.load_balancer_ip.clone()
    } else {
        ips.join(",")
    }
}

pub(crate) fn build(s: &Service) -> TargetGroup {
    let m = &s.metadata;
    let targets = s
        .spec
        .ports
        .iter()
        .map(|p| {
            let port = p.port.to_string();
            let host = format!("{}.{}.svc", m.name, m.namespace);
            let mut t = Labels::from([
                ("__address__".into(), join_host_port(&host, &port)),
                ("__meta_kubernetes_service_port_name".into(), p.name.clone()),
                ("__meta_kubernetes_service_port_number".into(), port),
                (
                    "__meta_kubernetes_service_port_protocol".into(),
                    p.protocol.clone(),
                ),
                ("__meta_kubernetes_service_type".into(), s.spec.kind.clone()),
            ]);
            if s.spec.kind == "ExternalName" {
                t.insert(
                    "__meta_kubernetes_service_external_name".into(),
                    s.spec.external_name.clone(),
                );
            } else {
                t.insert(
                    "__meta_kubernetes_service_cluster_ip".into(),
                    s.spec.cluster_ip.clone(),
                );
            }
            if s.spec.kind == "LoadBalancer" {
                t.insert(
                    "__meta_kubernetes_service_loadbalancer_ip".into(),
                    load_balancer_ips(s),
                );
            }
            t
        })
        .collect();
    TargetGroup {
        source: format!("svc/{}/{}", m.namespace, m.name),
        targets,
        labels: service_labels(s),
    }
}
