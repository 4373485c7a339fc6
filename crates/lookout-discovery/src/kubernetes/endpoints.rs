//! `role: endpoints` and `role: endpointslice`: one target per address and port, joined with
//! the labels of the service of the same name and of the pod each address points at (from
//! the service and pod watches, as Prometheus's informers); container ports of those pods
//! (init containers included) that no endpoint port covers get a target of their own. The
//! slices of a dual-stack service's secondary address family have no targets.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::types::{
    Container, ContainerPort, EndpointAddress, EndpointPort, Endpoints, ObjectReference, Pod,
    Service,
};
use super::types::{EndpointSlice, SliceEndpoint, SlicePort};
use super::{Labels, Store, add_object_meta, node, pod, service};
use crate::{TargetGroup, join_host_port};

/// A pod targets pointed at: the ports it was seen on, and its labels and container port
/// index (built once).
struct SeenPod<'a> {
    pod: &'a Pod,
    ports: HashSet<i32>,
    labels: Labels,
    by_port: PortIndex<'a>,
}

/// The container serving each port number of a pod, as Prometheus finds it: the first
/// port of that number in a container, of the last container that has one.
type PortIndex<'a> = HashMap<i32, (&'a Container, bool, &'a ContainerPort)>;

fn port_index(p: &Pod) -> PortIndex<'_> {
    let mut index = PortIndex::new();
    for (c, init) in containers(p) {
        let mut here = HashSet::new();
        for cp in &c.ports {
            if here.insert(cp.container_port) {
                index.insert(cp.container_port, (c, init, cp));
            }
        }
    }
    index
}

/// The pods targets pointed at.
#[derive(Default)]
struct SeenPods<'a>(BTreeMap<String, SeenPod<'a>>);

impl<'a> SeenPods<'a> {
    /// The pod `r` refers to, if it is a known pod; remembers `port` for it.
    fn resolve(
        &mut self,
        store: &'a Store,
        r: Option<&ObjectReference>,
        port: Option<i32>,
    ) -> Option<&SeenPod<'a>> {
        let r = r.filter(|r| r.kind == "Pod")?;
        let p = store.pod(&r.namespace, &r.name)?;
        let e = self
            .0
            .entry(format!("{}/{}", p.metadata.namespace, p.metadata.name))
            .or_insert_with(|| SeenPod {
                pod: p,
                ports: HashSet::new(),
                labels: pod::pod_labels(p),
                by_port: port_index(p),
            });
        e.ports.extend(port);
        Some(e)
    }

    /// The container ports (init containers' too) of `sp` no endpoint port covered, for
    /// pods with an IP.
    fn uncovered_ports<'s>(
        sp: &'s SeenPod<'a>,
    ) -> impl Iterator<Item = (&'a Container, bool, &'a ContainerPort)> + 's {
        let with_ip = !sp.pod.status.pod_ip.is_empty();
        containers(sp.pod)
            .filter(move |_| with_ip)
            .flat_map(|(c, init)| c.ports.iter().map(move |cp| (c, init, cp)))
            .filter(|(_, _, cp)| !sp.ports.contains(&cp.container_port))
    }

    /// How many targets [`SeenPods::uncovered`] would add.
    fn uncovered_count(&self) -> usize {
        self.0
            .values()
            .map(|sp| Self::uncovered_ports(sp).count())
            .sum()
    }

    /// Targets for the container ports (init containers' too) no endpoint port covered.
    fn uncovered(&self, targets: &mut Vec<Labels>) {
        for sp in self.0.values() {
            let ip = &sp.pod.status.pod_ip;
            for (c, init, cp) in Self::uncovered_ports(sp) {
                let mut t =
                    Labels::from([("__address__".into(), join_host_port(ip, cp.container_port))]);
                container_labels(&mut t, c, init, cp, &cp.protocol);
                t.extend(sp.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                targets.push(t);
            }
        }
    }
}

/// The pod's containers then its init containers, each with whether it is an init one.
fn containers(p: &Pod) -> impl Iterator<Item = (&Container, bool)> {
    let main = p.spec.containers.iter().map(|c| (c, false));
    main.chain(p.spec.init_containers.iter().map(|c| (c, true)))
}

/// Adds the pod's labels and those of its container serving `port` to `t`; `protocol`
/// chooses the protocol label's source (Prometheus's endpoints role takes the endpoint's,
/// its endpointslice role the container's).
fn join_pod(t: &mut Labels, sp: &SeenPod, port: i32, endpoint_protocol: Option<&str>) {
    t.extend(sp.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let Some((c, init, cp)) = sp.by_port.get(&port) else {
        return;
    };
    container_labels(t, c, *init, cp, endpoint_protocol.unwrap_or(&cp.protocol));
}

/// The labels of container `c` (an init one: `init`) and its port `cp`, with `protocol`.
fn container_labels(t: &mut Labels, c: &Container, init: bool, cp: &ContainerPort, protocol: &str) {
    let labels = [
        ("name", c.name.clone()),
        ("image", c.image.clone()),
        ("port_name", cp.name.clone()),
        ("port_number", cp.container_port.to_string()),
        ("port_protocol", protocol.to_string()),
        ("init", init.to_string()),
    ];
    for (k, v) in labels {
        t.insert(format!("__meta_kubernetes_pod_container_{k}"), v);
    }
}

/// The node an address is on: its `nodeName`, else its target when that is a node
/// (`node_first` tries the target first, as Prometheus's endpointslice role).
fn node_of<'a>(
    node_name: Option<&'a str>,
    target: Option<&'a ObjectReference>,
    node_first: bool,
) -> Option<&'a str> {
    let by_ref = target.filter(|r| r.kind == "Node").map(|r| r.name.as_str());
    if node_first {
        by_ref.or(node_name)
    } else {
        node_name.or(by_ref)
    }
}

fn endpoint_target<'a>(
    a: &EndpointAddress,
    port: &EndpointPort,
    ready: &str,
    store: &'a Store,
    seen: &mut SeenPods<'a>,
) -> Labels {
    let mut t = Labels::from([
        ("__address__".into(), join_host_port(&a.ip, port.port)),
        (
            "__meta_kubernetes_endpoint_port_name".into(),
            port.name.clone(),
        ),
        (
            "__meta_kubernetes_endpoint_port_protocol".into(),
            port.protocol.clone(),
        ),
        ("__meta_kubernetes_endpoint_ready".into(), ready.to_string()),
    ]);
    if let Some(r) = &a.target_ref {
        t.insert(
            "__meta_kubernetes_endpoint_address_target_kind".into(),
            r.kind.clone(),
        );
        t.insert(
            "__meta_kubernetes_endpoint_address_target_name".into(),
            r.name.clone(),
        );
    }
    if let Some(n) = &a.node_name {
        t.insert("__meta_kubernetes_endpoint_node_name".into(), n.clone());
    }
    if !a.hostname.is_empty() {
        t.insert(
            "__meta_kubernetes_endpoint_hostname".into(),
            a.hostname.clone(),
        );
    }
    if store.attach_node {
        let n = node_of(a.node_name.as_deref(), a.target_ref.as_ref(), false);
        node::attached(&mut t, n.and_then(|n| store.node(n)));
    }
    if let Some(sp) = seen.resolve(store, a.target_ref.as_ref(), Some(port.port)) {
        join_pod(&mut t, sp, port.port, Some(&port.protocol));
    }
    t
}

/// How many address-and-port targets `e` has (saturating), before any is built.
fn endpoints_count(e: &Endpoints) -> usize {
    e.subsets.iter().fold(0usize, |n, ss| {
        let addrs = ss
            .addresses
            .len()
            .saturating_add(ss.not_ready_addresses.len());
        n.saturating_add(ss.ports.len().saturating_mul(addrs))
    })
}

/// How many address-and-port targets `e` has (saturating), before any is built.
fn slice_count(e: &EndpointSlice) -> usize {
    let addrs = e
        .endpoints
        .iter()
        .fold(0usize, |n, ep| n.saturating_add(ep.addresses.len()));
    e.ports.len().saturating_mul(addrs)
}

/// Adds the targets of the uncovered container ports, unless `targets` would then hold
/// more than `limit`: `Err` with the count then.
fn finish(seen: &SeenPods, targets: &mut Vec<Labels>, limit: usize) -> Result<(), usize> {
    let n = targets.len().saturating_add(seen.uncovered_count());
    if n > limit {
        return Err(n);
    }
    seen.uncovered(targets);
    Ok(())
}

/// The group of `e`; `Err` with the target count, before building them, when it has more
/// than `limit` targets.
pub(crate) fn build_endpoints(
    e: &Endpoints,
    store: &Store,
    limit: usize,
) -> Result<TargetGroup, usize> {
    let n = endpoints_count(e);
    if n > limit {
        return Err(n);
    }
    let m = &e.metadata;
    let mut labels = Labels::from([("__meta_kubernetes_namespace".into(), m.namespace.clone())]);
    if let Some(s) = store.service(&m.namespace, &m.name) {
        labels.extend(service::service_labels(s));
    }
    add_object_meta(&mut labels, "endpoints", m);
    let mut seen = SeenPods::default();
    let mut targets = Vec::with_capacity(n);
    for ss in &e.subsets {
        for port in &ss.ports {
            for (addrs, ready) in [(&ss.addresses, "true"), (&ss.not_ready_addresses, "false")] {
                for a in addrs {
                    targets.push(endpoint_target(a, port, ready, store, &mut seen));
                }
            }
        }
    }
    finish(&seen, &mut targets, limit)?;
    Ok(TargetGroup {
        source: format!("endpoints/{}/{}", m.namespace, m.name),
        targets,
        labels,
    })
}

fn slice_target<'a>(
    addr: &str,
    ep: &SliceEndpoint,
    port: &SlicePort,
    store: &'a Store,
    seen: &mut SeenPods<'a>,
) -> Labels {
    const P: &str = "__meta_kubernetes_endpointslice_";
    let address = match port.port {
        Some(n) => join_host_port(addr, n),
        None => addr.to_string(),
    };
    let mut t = Labels::from([("__address__".into(), address)]);
    let mut opt = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            t.insert(format!("{P}{name}"), v);
        }
    };
    opt("port_name", port.name.clone());
    opt("port_protocol", port.protocol.clone());
    opt("port", port.port.map(|p| p.to_string()));
    opt("port_app_protocol", port.app_protocol.clone());
    let c = &ep.conditions;
    opt("endpoint_conditions_ready", c.ready.map(|b| b.to_string()));
    opt(
        "endpoint_conditions_serving",
        c.serving.map(|b| b.to_string()),
    );
    opt(
        "endpoint_conditions_terminating",
        c.terminating.map(|b| b.to_string()),
    );
    opt("endpoint_hostname", ep.hostname.clone());
    opt("endpoint_node_name", ep.node_name.clone());
    opt("endpoint_zone", ep.zone.clone());
    opt(
        "address_target_kind",
        ep.target_ref.as_ref().map(|r| r.kind.clone()),
    );
    opt(
        "address_target_name",
        ep.target_ref.as_ref().map(|r| r.name.clone()),
    );
    for (k, v) in &ep.deprecated_topology {
        let k = super::sanitize(k);
        t.insert(format!("{P}endpoint_topology_{k}"), v.clone());
        t.insert(format!("{P}endpoint_topology_present_{k}"), "true".into());
    }
    if store.attach_node {
        let n = node_of(ep.node_name.as_deref(), ep.target_ref.as_ref(), true);
        node::attached(&mut t, n.and_then(|n| store.node(n)));
    }
    if let Some(sp) = seen.resolve(store, ep.target_ref.as_ref(), port.port) {
        match port.port {
            Some(n) => join_pod(&mut t, sp, n, None),
            None => t.extend(sp.labels.iter().map(|(k, v)| (k.clone(), v.clone()))),
        }
    }
    t
}

/// Whether the slice holds the secondary address family of a dual-stack service (its
/// targets would repeat those of the primary family's slice): Prometheus gives it none.
fn secondary_family(s: &Service, e: &EndpointSlice) -> bool {
    let dual = matches!(
        s.spec.ip_family_policy.as_deref(),
        Some("PreferDualStack" | "RequireDualStack")
    );
    dual && s
        .spec
        .ip_families
        .first()
        .is_some_and(|f| *f != e.address_type)
}

/// The group of `e`; `Err` with the target count, before building them, when it has more
/// than `limit` targets.
pub(crate) fn build_endpointslice(
    e: &EndpointSlice,
    store: &Store,
    limit: usize,
) -> Result<TargetGroup, usize> {
    let m = &e.metadata;
    let mut labels = Labels::from([
        ("__meta_kubernetes_namespace".into(), m.namespace.clone()),
        (
            "__meta_kubernetes_endpointslice_address_type".into(),
            e.address_type.clone(),
        ),
    ]);
    let svc = m
        .labels
        .get("kubernetes.io/service-name")
        .and_then(|name| store.service(&m.namespace, name));
    if let Some(s) = svc {
        labels.extend(service::service_labels(s));
    }
    add_object_meta(&mut labels, "endpointslice", m);
    let source = format!("endpointslice/{}/{}", m.namespace, m.name);
    if svc.is_some_and(|s| secondary_family(s, e)) {
        return Ok(TargetGroup {
            source,
            targets: vec![],
            labels,
        });
    }
    let n = slice_count(e);
    if n > limit {
        return Err(n);
    }
    let mut seen = SeenPods::default();
    let mut targets = Vec::with_capacity(n);
    for ep in &e.endpoints {
        for port in &e.ports {
            for addr in &ep.addresses {
                targets.push(slice_target(addr, ep, port, store, &mut seen));
            }
        }
    }
    finish(&seen, &mut targets, limit)?;
    Ok(TargetGroup {
        source,
        targets,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The container labels of a target, as Prometheus joins them: in each container
    /// (init containers after the others) the first port of the number, and the last
    /// container that has one wins.
    #[test]
    fn container_port_join_as_prometheus() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "containers": [
                    {"name": "a", "image": "ia", "ports": [
                        {"name": "a80", "containerPort": 80, "protocol": "TCP"},
                        {"name": "a80bis", "containerPort": 80, "protocol": "UDP"},
                        {"name": "a9090", "containerPort": 9090, "protocol": "TCP"},
                        {"name": "a8080", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "a8080bis", "containerPort": 8080, "protocol": "UDP"}
                    ]},
                    {"name": "b", "image": "ib", "ports": [
                        {"name": "b80", "containerPort": 80, "protocol": "SCTP"}
                    ]}
                ],
                "initContainers": [
                    {"name": "c", "image": "ic", "ports": [
                        {"name": "c9090", "containerPort": 9090, "protocol": "UDP"}
                    ]}
                ]
            }
        }))
        .unwrap();
        let sp = SeenPod {
            pod: &p,
            ports: HashSet::new(),
            labels: Labels::from([("pod".into(), "labels".into())]),
            by_port: port_index(&p),
        };
        let join = |port, protocol| {
            let mut t = Labels::new();
            join_pod(&mut t, &sp, port, protocol);
            let get = |k: &str| {
                t.get(&format!("__meta_kubernetes_pod_container_{k}"))
                    .cloned()
            };
            (
                get("name"),
                get("port_name"),
                get("port_protocol"),
                get("init"),
                t.get("pod").cloned(),
            )
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            join(80, None),
            (s("b"), s("b80"), s("SCTP"), s("false"), s("labels"))
        );
        assert_eq!(
            join(80, Some("TCP")),
            (s("b"), s("b80"), s("TCP"), s("false"), s("labels"))
        );
        assert_eq!(
            join(9090, None),
            (s("c"), s("c9090"), s("UDP"), s("true"), s("labels"))
        );
        assert_eq!(
            join(8080, None),
            (s("a"), s("a8080"), s("TCP"), s("false"), s("labels"))
        );
        assert_eq!(join(1, None), (None, None, None, None, s("labels")));
    }
}
