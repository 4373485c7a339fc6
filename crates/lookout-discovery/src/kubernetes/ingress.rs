//! `role: ingress`: one target per rule host and path, the host as the address.

use std::collections::HashSet;

use super::types::Ingress;
use super::{Labels, add_object_meta};
use crate::TargetGroup;

/// The TLS hosts of an ingress, to match rule hosts against in constant time: the exact
/// names, and the parts after `*.` of the wildcards (`None`: the wildcard `*` alone).
#[derive(Default)]
struct TlsHosts<'a> {
    exact: HashSet<&'a str>,
    wildcard: HashSet<Option<&'a str>>,
}

impl<'a> TlsHosts<'a> {
    fn new(patterns: impl Iterator<Item = &'a str>) -> Self {
        let mut h = TlsHosts::default();
        for p in patterns {
            h.exact.insert(p);
            match p.split_once('.') {
                Some(("*", rest)) => h.wildcard.insert(Some(rest)),
                None if p == "*" => h.wildcard.insert(None),
                _ => false,
            };
        }
        h
    }

    /// Whether `host` matches a pattern: equal, or a `*.` wildcard with the same number of
    /// parts (the first part of `host` is anything without a dot).
    fn matches(&self, host: &str) -> bool {
        self.exact.contains(host)
            || self
                .wildcard
                .contains(&host.split_once('.').map(|(_, rest)| rest))
    }
}

pub(crate) fn build(i: &Ingress) -> TargetGroup {
    let m = &i.metadata;
    let mut labels = Labels::new();
    add_object_meta(&mut labels, "ingress", m);
    labels.insert("__meta_kubernetes_namespace".into(), m.namespace.clone());
    if let Some(c) = &i.spec.ingress_class_name {
        labels.insert("__meta_kubernetes_ingress_class_name".into(), c.clone());
    }
    let tls_hosts = TlsHosts::new(i.spec.tls.iter().flat_map(|t| &t.hosts).map(String::as_str));
    let mut targets = Vec::new();
    for rule in &i.spec.rules {
        let https = tls_hosts.matches(&rule.host);
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

    fn matches_hostname_pattern(pattern: &str, host: &str) -> bool {
        TlsHosts::new([pattern].into_iter()).matches(host)
    }

    #[test]
    fn hostname_patterns() {
        assert!(matches_hostname_pattern("a.example.com", "a.example.com"));
        assert!(matches_hostname_pattern("*.example.com", "a.example.com"));
        assert!(!matches_hostname_pattern(
            "*.example.com",
            "a.b.example.com"
        ));
        assert!(!matches_hostname_pattern("*.example.com", "example.com"));
        assert!(!matches_hostname_pattern("a.*.com", "a.example.com"));
        assert!(!matches_hostname_pattern("*", "a.example.com"));
        // As Prometheus's part-by-part comparison: `*` matches a name of one part.
        assert!(matches_hostname_pattern("*", "localhost"));
        assert!(matches_hostname_pattern("*.", "a."));
        let many = TlsHosts::new(["x.example", "*.example.com", "*.example.org"].into_iter());
        assert!(many.matches("x.example"));
        assert!(many.matches("b.example.org"));
        assert!(!many.matches("b.example.net"));
    }
}
