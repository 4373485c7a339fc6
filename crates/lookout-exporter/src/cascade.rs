//! The cascade view: which down targets are explained by a down dependency.
//!
//! A target is *blocked by* a dependency when the target is down and a target named in its
//! own `depends_on` is down too. Only direct dependencies count: if `app` depends on `lb` and
//! `lb` on `dns`, and all three are down, the series are `{instance="app",blocked_by="lb"}`
//! and `{instance="lb",blocked_by="dns"}`. An alert rule that pages for down targets
//! `unless on(instance) lookout_target_blocked` then pages for `dns` only, the root cause,
//! and the chain stays visible step by step. Targets never probed yet count as not down.

use std::collections::HashMap;

/// One `lookout_target_blocked{instance,blocked_by} 1` series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The down target.
    pub instance: String,
    /// The down dependency that explains it.
    pub blocked_by: String,
}

/// One target's place in the cascade.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// The target's name.
    pub name: &'a str,
    /// The names it depends on directly.
    pub depends_on: &'a [String],
    /// Whether its last probe failed.
    pub down: bool,
}

/// Every (down target, down direct dependency) pair, in the order of `nodes` and then of
/// each target's `depends_on`.
pub fn blocked(nodes: &[Node<'_>]) -> Vec<Blocked> {
    let down: HashMap<&str, bool> = nodes.iter().map(|n| (n.name, n.down)).collect();
    let mut out = Vec::new();
    for node in nodes.iter().filter(|n| n.down) {
        for dependency in node.depends_on {
            if down.get(dependency.as_str()).copied().unwrap_or(false) {
                out.push(Blocked {
                    instance: node.name.to_string(),
                    blocked_by: dependency.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_down_targets_with_down_direct_dependencies_are_blocked() {
        let app_deps = vec!["lb".to_string(), "cache".to_string()];
        let lb_deps = vec!["dns".to_string()];
        let nodes = [
            Node {
                name: "app",
                depends_on: &app_deps,
                down: true,
            },
            Node {
                name: "lb",
                depends_on: &lb_deps,
                down: true,
            },
            Node {
                name: "cache",
                depends_on: &[],
                down: false,
            },
            Node {
                name: "dns",
                depends_on: &[],
                down: true,
            },
        ];
        assert_eq!(
            blocked(&nodes),
            vec![
                Blocked {
                    instance: "app".into(),
                    blocked_by: "lb".into()
                },
                Blocked {
                    instance: "lb".into(),
                    blocked_by: "dns".into()
                },
            ]
        );
    }

    #[test]
    fn an_up_target_is_never_blocked() {
        let deps = vec!["db".to_string()];
        let nodes = [
            Node {
                name: "app",
                depends_on: &deps,
                down: false,
            },
            Node {
                name: "db",
                depends_on: &[],
                down: true,
            },
        ];
        assert!(blocked(&nodes).is_empty());
    }
}
