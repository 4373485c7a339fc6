//! `target_groups:`: continuously probed targets found by service discovery, and
//! `--targets.shard`.
//!
//! ```yaml
//! target_groups:
//!   - name: web                 # unique; the discovery set's name
//!     module: http_2xx          # default module (a target may choose another, below)
//!     interval: 30s             # default 15s
//!     file_sd_configs: [{files: [targets/*.yml]}]
//!     http_sd_configs: [{url: http://cmdb.internal/sd}]
//!     dns_sd_configs: [{names: [_web._tcp.example.org]}]
//!     kubernetes_sd_configs: [{role: service, namespaces: {names: [web]}}]
//!     relabel_configs: [...]    # Prometheus's relabelling
//! ```
//!
//! Each discovered target starts as its group's labels merged with its own (`__address__`,
//! `__meta_*`, ...), plus `__param_module` (the group's `module`) and `__scrape_interval__`
//! (the group's `interval`) when absent. After `relabel_configs` (a dropped target is not
//! probed): the probed target is `__param_target`, else `__address__`; the module is
//! `__param_module` and must exist; the name (the `instance` label, unique among all
//! targets) is `instance`, else the probed target; the interval is `__scrape_interval__`;
//! every other label not starting with `__` is an extra label. A discovered target whose
//! name is already taken (by a `targets:` entry or an earlier discovered one) or whose module
//! is unknown is skipped with a warning. Discovered targets have no `depends_on`.
//!
//! Sharding: with `--targets.shard=i/N` an exporter probes only the targets (static and
//! discovered) whose name hashes (FNV-1a, 64 bit) to `i` modulo `N`, so N exporters with
//! the same configuration probe every target exactly once between them; the hash of a name
//! never changes, so a target stays on its shard across reloads.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use lookout_discovery::relabel::{self, RelabelConfig};
use lookout_discovery::{SdConfigs, TargetGroup};
use lookout_promql::Labels;

use crate::config::{Config, Target};

/// One `target_groups:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroupConfig {
    /// Unique name.
    pub name: String,
    /// Default module (`__param_module`).
    pub module: Option<String>,
    /// Default interval.
    pub interval: Duration,
    /// The discovery providers.
    pub sd: SdConfigs,
    /// Relabelling of the discovered targets.
    pub relabel_configs: Vec<RelabelConfig>,
}

/// Which share of the targets this exporter probes (`--targets.shard=i/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This exporter's index, `0..count`.
    pub index: u64,
    /// How many exporters share the targets.
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("invalid shard {s:?}: write i/N with 0 <= i < N, e.g. 0/3");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether this shard probes the target named `name`.
    pub fn owns(&self, name: &str) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h % self.count == self.index
    }
}

/// The targets of `group` built from its discovered `groups` (see the module docs); `taken`
/// holds the names already used and receives the new ones.
pub fn targets_from(
    config: &Config,
    group: &TargetGroupConfig,
    groups: &[TargetGroup],
    taken: &mut HashSet<String>,
) -> Vec<Target> {
    let mut out = Vec::new();
    for tg in groups {
        for pairs in tg.merged() {
            let mut lb = Labels::new(pairs);
            if let Some(m) = &group.module
                && lb.get("__param_module").is_none()
            {
                lb.set("__param_module", m);
            }
            if lb.get("__scrape_interval__").is_none() {
                lb.set(
                    "__scrape_interval__",
                    &lookout_promql::duration::format_duration(group.interval),
                );
            }
            let Some(lb) = relabel::process(&lb, &group.relabel_configs) else {
                continue;
            };
            let target = lb
                .get("__param_target")
                .or_else(|| lb.get("__address__"))
                .unwrap_or("")
                .to_string();
            let module = lb.get("__param_module").unwrap_or("").to_string();
            let name = lb.get("instance").unwrap_or(&target).to_string();
            let skip = |why: String| {
                tracing::warn!(group = %group.name, target = %name, "discovered target skipped: {why}");
            };
            if target.is_empty() {
                skip("no __address__ or __param_target".into());
                continue;
            }
            if !config.modules.contains_key(&module) {
                skip(format!(
                    "unknown module {module:?} (set module: or __param_module)"
                ));
                continue;
            }
            let interval = match lookout_promql::duration::parse_duration(
                lb.get("__scrape_interval__").unwrap_or(""),
            ) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    skip("invalid __scrape_interval__".into());
                    continue;
                }
            };
            if !taken.insert(name.clone()) {
                skip("another target has that name".into());
                continue;
            }
            let labels: BTreeMap<String, String> = lb
                .iter()
                .filter(|(k, _)| !k.starts_with("__") && *k != "instance")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            out.push(Target {
                name,
                module,
                target,
                interval,
                labels,
                depends_on: Vec::new(),
            });
        }
    }
    out
}

/// The targets this exporter probes: the configured ones and the discovered ones
/// (`discovered(group name)`), keeping only `shard`'s share.
pub fn effective_targets(
    config: &Config,
    discovered: impl Fn(&str) -> Vec<TargetGroup>,
    shard: Option<Shard>,
) -> Vec<Target> {
    let mut taken: HashSet<String> = config.targets.iter().map(|t| t.name.clone()).collect();
    let mut all = config.targets.clone();
    for g in &config.target_groups {
        all.extend(targets_from(config, g, &discovered(&g.name), &mut taken));
    }
    if let Some(s) = shard {
        all.retain(|t| s.owns(&t.name));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_every_name_exactly_once() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for n in 0..1000 {
            let name = format!("target-{n}");
            assert_eq!(shards.iter().filter(|s| s.owns(&name)).count(), 1);
        }
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }
}
