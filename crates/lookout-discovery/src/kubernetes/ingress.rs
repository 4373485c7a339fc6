//! `role: ingress`: one target per rule host and path, the host as the address.

use super::types::Ingress;
use super::{Labels, add_object_meta};
use crate::TargetGroup;

/// Whether `host` matches `pattern`, equal or a `*.` wildcard of the same number of parts.
fn matches_hostname_pattern(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p[0] == "*" && p.len() == h.len() && p[1..] == h[1..]
}

pub(crate) fn build(i: &Ingress) -> TargetGroup {
    let m = &i.metadata;
    let mut labels = Labels::new();
    add_object_meta(&mut labels, "ingress", m);
    labels.insert("__meta_kubernetes_namespace".into(), m.namespace.clone());
    if let Some(c) = &i.spec.ingress_class_name {
        labels.insert("__meta_kubernetes_ingress_class_name".into(), c.clone());
    }
    let tls_hosts: Vec<&String> = i.spec.tls.iter().flat_map(|t| &t.hosts).collect();
    let mut targets = Vec::new();
    for rule in &i.spec.rules {
        let https = tls_hosts
            .iter()
            .any(|p| matches_hostname_pattern(p, &rule.host));
        let paths: Vec<&str> = match &rule.http {
            None => vec!["/"],
            Some(h) => h
                .paths
                .iter()
                .map(|p| if p.path.is_empty() { "/" } else { &p.path })
                .collect(),
        };
        for path in paths {
            targets.push(Labels::from([
                ("__address__".into(), rule.host.clone()),
                (
                    "__meta_kubernetes_ingress_scheme".into(),
                    if https { "https" } else { "http" }.into(),
                ),
                ("__meta_kubernetes_ingress_host".into(), rule.host.clone()),
                ("__meta_kubernetes_ingress_path".into(), path.to_string()),
            ]));
        }
    }
    TargetGroup {
        source: format!("ingress/{}/{}", m.namespace, m.name),
        targets,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_patterns() {
        assert!(matches_hostname_pattern("a.example.com", "a.example.com"));
        assert!(matches_hostname_pattern("*.example.com", "a.example.com"));
        assert!(!matches_hostname_pattern(
            "*.example.com",
            "a.b.example.com"
        ));
        assert!(!matches_hostname_pattern("a.*.com", "a.example.com"));
        assert!(!matches_hostname_pattern("*", "a.example.com"));
    }
}
