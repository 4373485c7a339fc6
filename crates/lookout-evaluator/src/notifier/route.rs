//! Alertmanager's routing vocabulary for Lookout's own receivers: label matchers, the
//! `route` tree (which receivers get an alert, and how alerts are grouped and timed), and
//! `inhibit_rules` (which firing alerts mute which others), plus Lookout's built-in
//! dependency inhibition (a blocked target's alerts are muted while the target it is
//! blocked by has a firing alert).
//!
//! The semantics follow Alertmanager's `dispatch/route.go` and `inhibit/inhibit.go`; the
//! differences are listed in docs/notifications.md.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use lookout_promql::Labels;
use serde::{Deserialize, Deserializer};

use crate::alert::Alert;
use crate::scrape_config::{PromDuration, deserialize_parsed};

/// Alertmanager's defaults.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
/// Alertmanager's default `group_interval`.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Alertmanager's default `repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

/// Longest matcher string accepted (bounded input).
const MAX_MATCHER_LEN: usize = 4096;

/// A matcher operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (anchored regex)
    Re,
    /// `!~`
    NotRe,
}

/// One label matcher, `severity="critical"`, `instance=~"db-.*"`.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value (the pattern for regex operators).
    pub value: String,
    re: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        };
        write!(f, "{}{}{:?}", self.name, op, self.value)
    }
}

impl Matcher {
    /// A matcher from its parts; regexes are anchored as Alertmanager anchors them.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        if !crate::rules::file::is_valid_label_name(name) {
            return Err(format!("{name:?} is not a valid label name"));
        }
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                lookout_promql::re2::compile_anchored(value)
                    .map_err(|e| format!("invalid regular expression {value:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// Parses `name="value"`, `name!="value"`, `name=~"re"`, `name!~"re"`; the value may be
    /// unquoted (then it runs to the end, trimmed), as in Alertmanager's `matchers`.
    pub fn parse(s: &str) -> Result<Matcher, String> {
        if s.len() > MAX_MATCHER_LEN {
            return Err(format!("matcher longer than {MAX_MATCHER_LEN} bytes"));
        }
        let t = s.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .map(str::trim)
            .unwrap_or(t);
        let end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| format!("{s:?}: expected name, operator and value"))?;
        let (name, rest) = t.split_at(end);
        let rest = rest.trim_start();
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Re, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::Ne, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Eq, r)
        } else {
            return Err(format!(
                "{s:?}: expected an operator (=, !=, =~, !~) after {name:?}"
            ));
        };
        let rest = rest.trim();
        let value = if let Some(q) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(c) => out.push(c),
                        None => break,
                    },
                    c => out.push(c),
                }
            }
            if !closed {
                return Err(format!("{s:?}: unterminated quoted value"));
            }
            if !chars.as_str().trim().is_empty() {
                return Err(format!("{s:?}: unexpected text after the quoted value"));
            }
            out
        } else {
            rest.to_string()
        };
        Matcher::new(name, op, &value).map_err(|e| format!("{s:?}: {e}"))
    }

    /// Whether the labels satisfy the matcher (an absent label is the empty string).
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a matcher such as severity=\"critical\"", Matcher::parse)
    }
}

/// A regex value of `match_re` (anchored when used).
#[derive(Clone, Debug, PartialEq)]
pub struct RegexValue(pub String);

impl<'de> Deserialize<'de> for RegexValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a regular expression", |s| {
            lookout_promql::re2::compile_anchored(s)
                .map(|_| RegexValue(s.to_string()))
                .map_err(|e| format!("invalid regular expression {s:?}: {e}"))
        })
    }
}

fn all_matchers(
    matchers: &[Matcher],
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, RegexValue>,
) -> Result<Vec<Matcher>, String> {
    let mut out = matchers.to_vec();
    for (k, v) in eq {
        out.push(Matcher::new(k, MatchOp::Eq, v)?);
    }
    for (k, v) in re {
        out.push(Matcher::new(k, MatchOp::Re, &v.0)?);
    }
    Ok(out)
}

fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// `group_by`: label names, or `['...']` for every label.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupBy {
    /// Group on these labels (none: one group per route).
    Labels(Vec<String>),
    /// `...`: one group per distinct label set.
    All,
}

/// One node of the `route` tree as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Receiver name (inherited from the parent when absent; required at the root).
    #[serde(default)]
    pub receiver: Option<String>,
    /// Labels to group on; `...` alone groups by all labels (inherited).
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// Keep looking at later siblings after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Matchers, Alertmanager's `matchers` syntax.
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// Deprecated Alertmanager form: label equals value.
    #[serde(default, rename = "match")]
    pub match_: BTreeMap<String, String>,
    /// Deprecated Alertmanager form: label matches the anchored regex.
    #[serde(default)]
    pub match_re: BTreeMap<String, RegexValue>,
    /// Wait before the first notification of a new group (inherited, default 30s).
    #[serde(default)]
    pub group_wait: Option<PromDuration>,
    /// Wait between notifications about a changed group (inherited, default 5m).
    #[serde(default)]
    pub group_interval: Option<PromDuration>,
    /// Wait before re-sending an unchanged, still-firing group (inherited, default 4h).
    #[serde(default)]
    pub repeat_interval: Option<PromDuration>,
    /// Child routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// Timings and grouping of a route, after inheritance.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteOpts {
    /// The receiver.
    pub receiver: String,
    /// Grouping.
    pub group_by: GroupBy,
    /// `group_wait`.
    pub group_wait: Duration,
    /// `group_interval`.
    pub group_interval: Duration,
    /// `repeat_interval`.
    pub repeat_interval: Duration,
}

/// A route with inherited options resolved.
#[derive(Clone, Debug)]
pub struct Route {
    /// Alertmanager's route key: the parent's key and this route's matchers.
    pub key: String,
    /// The resolved options.
    pub opts: RouteOpts,
    matchers: Vec<Matcher>,
    continue_: bool,
    children: Vec<Route>,
}

impl Route {
    /// Resolves a root `route` (which takes every alert, so it has no matchers, as in
    /// Alertmanager). `receivers` are the known receiver names.
    pub fn build(cfg: &RouteConfig, receivers: &HashSet<String>) -> Result<Route, String> {
        let Some(receiver) = cfg.receiver.clone() else {
            return Err("route: the root route must name a receiver".to_string());
        };
        let root_opts = RouteOpts {
            receiver,
            group_by: GroupBy::Labels(Vec::new()),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
        };
        if !(cfg.matchers.is_empty() && cfg.match_.is_empty() && cfg.match_re.is_empty()) {
            return Err(
                "route: the root route must not have matchers (it takes every alert)".into(),
            );
        }
        if cfg.continue_ {
            return Err("route: the root route cannot have continue set".into());
        }
        Route::build_child(cfg, &root_opts, "", receivers, "route", 0)
    }

    fn build_child(
        cfg: &RouteConfig,
        parent: &RouteOpts,
        parent_key: &str,
        receivers: &HashSet<String>,
        path: &str,
        depth: usize,
    ) -> Result<Route, String> {
        if depth > 64 {
            return Err(format!("{path}: routes nested deeper than 64 levels"));
        }
        let matchers = all_matchers(&cfg.matchers, &cfg.match_, &cfg.match_re)
            .map_err(|e| format!("{path}: {e}"))?;
        let receiver = cfg
            .receiver
            .clone()
            .unwrap_or_else(|| parent.receiver.clone());
        if !receivers.contains(&receiver) {
            return Err(format!(
                "{path}: receiver {receiver:?} is not defined in receivers"
            ));
        }
        let group_by = match &cfg.group_by {
            None => parent.group_by.clone(),
            Some(l) if l.iter().any(|n| n == "...") => {
                if l.len() > 1 {
                    return Err(format!(
                        "{path}: group_by '...' must be the only label name"
                    ));
                }
                GroupBy::All
            }
            Some(l) => {
                let mut seen = HashSet::new();
                for n in l {
                    if !crate::rules::file::is_valid_label_name(n) {
                        return Err(format!("{path}: group_by {n:?} is not a valid label name"));
                    }
                    if !seen.insert(n) {
                        return Err(format!("{path}: group_by names {n:?} twice"));
                    }
                }
                GroupBy::Labels(l.clone())
            }
        };
        let pick = |d: Option<PromDuration>, inherited: Duration, what: &str| match d.map(|d| d.0) {
            Some(z) if z.is_zero() && what != "group_wait" => {
                Err(format!("{path}: {what} must be greater than 0"))
            }
            Some(d) => Ok(d),
            None => Ok(inherited),
        };
        let opts = RouteOpts {
            receiver,
            group_by,
            group_wait: pick(cfg.group_wait, parent.group_wait, "group_wait")?,
            group_interval: pick(cfg.group_interval, parent.group_interval, "group_interval")?,
            repeat_interval: pick(
                cfg.repeat_interval,
                parent.repeat_interval,
                "repeat_interval",
            )?,
        };
        let key = if depth == 0 {
            "{}".to_string()
        } else {
            let ms: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
            format!("{parent_key}/{{{}}}", ms.join(","))
        };
        let mut children = Vec::with_capacity(cfg.routes.len());
        for (i, c) in cfg.routes.iter().enumerate() {
            children.push(Route::build_child(
                c,
                &opts,
                &key,
                receivers,
                &format!("{path}.routes[{i}]"),
                depth + 1,
            )?);
        }
        Ok(Route {
            key,
            opts,
            matchers,
            continue_: cfg.continue_,
            children,
        })
    }

    /// The routes an alert with `labels` goes to, depth first, as Alertmanager's
    /// `Route.Match`: a route whose matchers match hands the alert to its matching children;
    /// when none matches, the route itself takes it. A matching child without `continue`
    /// stops the search among its siblings.
    pub fn routes_for<'a>(&'a self, labels: &Labels) -> Vec<&'a Route> {
        let mut out = Vec::new();
        self.collect(labels, &mut out);
        out
    }

    fn collect<'a>(&'a self, labels: &Labels, out: &mut Vec<&'a Route>) -> bool {
        if !matches_all(&self.matchers, labels) {
            return false;
        }
        let before = out.len();
        for child in &self.children {
            if child.collect(labels, out) && !child.continue_ {
                break;
            }
        }
        if out.len() == before {
            out.push(self);
        }
        true
    }

    /// The group labels of an alert on this route.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.opts.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => Labels::new(
                names
                    .iter()
                    .filter_map(|n| labels.get(n).map(|v| (n.as_str(), v))),
            ),
        }
    }
}

/// One `inhibit_rules` entry as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers the muting (source) alert must satisfy.
    #[serde(default)]
    pub source_matchers: Vec<Matcher>,
    /// Matchers the muted (target) alert must satisfy.
    #[serde(default)]
    pub target_matchers: Vec<Matcher>,
    /// Deprecated form of `source_matchers` (equality).
    #[serde(default)]
    pub source_match: BTreeMap<String, String>,
    /// Deprecated form of `source_matchers` (regex).
    #[serde(default)]
    pub source_match_re: BTreeMap<String, RegexValue>,
    /// Deprecated form of `target_matchers` (equality).
    #[serde(default)]
    pub target_match: BTreeMap<String, String>,
    /// Deprecated form of `target_matchers` (regex).
    #[serde(default)]
    pub target_match_re: BTreeMap<String, RegexValue>,
    /// Labels that must have equal values (absent counts as empty) in source and target.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// A checked inhibit rule.
#[derive(Clone, Debug)]
pub struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

impl InhibitRule {
    /// Checks `cfg` (`path` names it in errors).
    pub fn build(cfg: &InhibitRuleConfig, path: &str) -> Result<InhibitRule, String> {
        let source = all_matchers(
            &cfg.source_matchers,
            &cfg.source_match,
            &cfg.source_match_re,
        )
        .map_err(|e| format!("{path}: {e}"))?;
        let target = all_matchers(
            &cfg.target_matchers,
            &cfg.target_match,
            &cfg.target_match_re,
        )
        .map_err(|e| format!("{path}: {e}"))?;
        for n in &cfg.equal {
            if !crate::rules::file::is_valid_label_name(n) {
                return Err(format!("{path}: equal {n:?} is not a valid label name"));
            }
        }
        Ok(InhibitRule {
            source,
            target,
            equal: cfg.equal.clone(),
        })
    }
}

/// Decides which alerts are muted, from the currently firing alerts.
#[derive(Clone, Debug, Default)]
pub struct Inhibitor {
    rules: Vec<InhibitRule>,
    dependencies: bool,
}

/// How long after its last alert resolved a target still counts as failing for
/// dependency inhibition. When a chain `shop → lb → api` recovers, api's alert resolves
/// first while lb is still down for a probe interval or two (no longer blocked, its own
/// ServerDown pending for its `for`), and shop is still blocked by lb: without this hold,
/// shop's blocked alert would page in that gap. A blocked alert resolves as soon as the
/// target it is blocked by is up, so the hold never mutes a real root cause.
pub const DEPENDENCY_HOLD: Duration = Duration::from_secs(120);

/// The alerts an [`Inhibitor`] looks at, indexed once per flush.
pub struct FiringIndex<'a> {
    firing: Vec<&'a Labels>,
    /// instance → instances it is blocked by (from firing alerts with both labels).
    blocked_by: HashMap<&'a str, Vec<&'a str>>,
    /// instances with a firing alert, or one that resolved within [`DEPENDENCY_HOLD`].
    failing: HashSet<&'a str>,
}

impl<'a> FiringIndex<'a> {
    /// Indexes `alerts` (firing and resolved ones) as of `now`.
    pub fn new(alerts: impl IntoIterator<Item = &'a Alert>, now: SystemTime) -> FiringIndex<'a> {
        let mut idx = FiringIndex {
            firing: Vec::new(),
            blocked_by: HashMap::new(),
            failing: HashSet::new(),
        };
        for a in alerts {
            let l = &a.labels;
            let firing = a.ends_at.is_none_or(|e| e > now);
            let recent = a.ends_at.is_some_and(|e| e + DEPENDENCY_HOLD > now);
            if firing {
                idx.firing.push(l);
            }
            if let Some(i) = l.get("instance") {
                if firing || recent {
                    idx.failing.insert(i);
                }
                if firing && let Some(b) = l.get("blocked_by") {
                    idx.blocked_by.entry(i).or_default().push(b);
                }
            }
        }
        idx
    }
}

impl Inhibitor {
    /// An inhibitor for `rules`; `dependencies` turns on the built-in dependency rule.
    pub fn new(rules: Vec<InhibitRule>, dependencies: bool) -> Inhibitor {
        Inhibitor {
            rules,
            dependencies,
        }
    }

    /// Whether an alert with `labels` is muted by a firing alert of `idx`.
    pub fn mutes(&self, idx: &FiringIndex<'_>, labels: &Labels) -> bool {
        if self.dependencies
            && let Some(instance) = labels.get("instance")
            && let Some(deps) = idx.blocked_by.get(instance)
            && deps
                .iter()
                .any(|d| *d != instance && idx.failing.contains(d))
        {
            return true;
        }
        for r in &self.rules {
            if !matches_all(&r.target, labels) {
                continue;
            }
            let target_is_source = matches_all(&r.source, labels);
            let muted = idx.firing.iter().any(|s| {
                if !matches_all(&r.source, s) {
                    return false;
                }
                // Alertmanager: when the target also matches the source side, alerts that
                // match both sides cannot inhibit it (no self-inhibition).
                if target_is_source && matches_all(&r.target, s) {
                    return false;
                }
                r.equal
                    .iter()
                    .all(|n| s.get(n).unwrap_or("") == labels.get(n).unwrap_or(""))
            });
            if muted {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().copied())
    }

    #[test]
    fn parses_matchers() {
        let m = Matcher::parse("severity=\"critical\"").unwrap();
        assert_eq!(
            (m.name.as_str(), m.op, m.value.as_str()),
            ("severity", MatchOp::Eq, "critical")
        );
        let m = Matcher::parse(" instance =~ db-.* ").unwrap();
        assert_eq!(m.op, MatchOp::Re);
        assert!(m.matches(&l(&[("instance", "db-1")])));
        assert!(!m.matches(&l(&[("instance", "xdb-1")])));
        let m = Matcher::parse("team!=\"a\\\"b\"").unwrap();
        assert_eq!((m.op, m.value.as_str()), (MatchOp::Ne, "a\"b"));
        assert!(Matcher::parse("foo").is_err());
        assert!(Matcher::parse("foo=~\"(\"").is_err());
        assert!(Matcher::parse("foo=\"x").is_err());
        assert!(Matcher::parse("1a=b").is_err());
        let m = Matcher::parse("x!~\"\"").unwrap();
        assert!(!m.matches(&l(&[])));
    }

    fn tree(yaml: &str) -> Route {
        let cfg: RouteConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let names: HashSet<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        Route::build(&cfg, &names).unwrap()
    }

    #[test]
    fn routing_inherits_and_continues() {
        let r = tree(
            "receiver: a\ngroup_by: [alertname]\ngroup_wait: 10s\nroutes:\n  - matchers: ['severity=\"critical\"']\n    receiver: b\n    continue: true\n    group_by: ['...']\n  - match: {team: db}\n    receiver: c\n    repeat_interval: 1h\n    routes:\n      - match_re: {instance: 'db-[0-9]+'}\n        receiver: d\n",
        );
        let got = |pairs: &[(&str, &str)]| -> Vec<String> {
            r.routes_for(&l(pairs))
                .iter()
                .map(|x| x.opts.receiver.clone())
                .collect()
        };
        assert_eq!(got(&[("alertname", "X")]), ["a"]);
        assert_eq!(got(&[("severity", "critical"), ("team", "db")]), ["b", "c"]);
        assert_eq!(
            got(&[
                ("severity", "critical"),
                ("team", "db"),
                ("instance", "db-1")
            ]),
            ["b", "d"]
        );
        let d = &r.routes_for(&l(&[("team", "db"), ("instance", "db-1")]))[0];
        assert_eq!(d.opts.group_wait, Duration::from_secs(10));
        assert_eq!(d.opts.repeat_interval, Duration::from_secs(3600));
        assert_eq!(d.opts.group_interval, DEFAULT_GROUP_INTERVAL);
        assert_eq!(d.opts.group_by, GroupBy::Labels(vec!["alertname".into()]));
        let b = &r.routes_for(&l(&[("severity", "critical")]))[0];
        assert_eq!(b.opts.group_by, GroupBy::All);
        assert_eq!(b.key, "{}/{severity=\"critical\"}");
    }

    #[test]
    fn route_errors_name_the_route() {
        let cfg: RouteConfig =
            serde_yaml_ng::from_str("receiver: a\nroutes:\n  - receiver: zz\n").unwrap();
        let names: HashSet<String> = ["a".to_string()].into();
        let e = Route::build(&cfg, &names).unwrap_err();
        assert!(e.contains("route.routes[0]") && e.contains("\"zz\""), "{e}");
        let cfg: RouteConfig = serde_yaml_ng::from_str("receiver: a\nmatch: {x: y}\n").unwrap();
        let e = Route::build(&cfg, &names).unwrap_err();
        assert!(e.contains("must not have matchers"), "{e}");
        let e = serde_yaml_ng::from_str::<RouteConfig>("receiver: a\nmatchers: ['x=~\"(\"']\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        Alert {
            labels: l(pairs),
            annotations: BTreeMap::new(),
            starts_at: std::time::SystemTime::UNIX_EPOCH,
            ends_at: None,
            generator_url: String::new(),
        }
    }

    #[test]
    fn dependency_inhibition_follows_blocked_by() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let firing = [
            alert(&[("alertname", "ServerDown"), ("instance", "api")]),
            alert(&[
                ("alertname", "ServerBlocked"),
                ("instance", "lb"),
                ("blocked_by", "api"),
            ]),
            alert(&[
                ("alertname", "ServerBlocked"),
                ("instance", "shop"),
                ("blocked_by", "lb"),
            ]),
            alert(&[("alertname", "HighLatency"), ("instance", "shop")]),
        ];
        let idx = FiringIndex::new(firing.iter(), now);
        let on = Inhibitor::new(Vec::new(), true);
        let muted: Vec<bool> = firing.iter().map(|a| on.mutes(&idx, &a.labels)).collect();
        assert_eq!(muted, [false, true, true, true]);
        let off = Inhibitor::new(Vec::new(), false);
        assert!(firing.iter().all(|a| !off.mutes(&idx, &a.labels)));
        // Without the root cause's alert firing, the blocked alert pages.
        let idx = FiringIndex::new(firing[1..2].iter(), now);
        assert!(!on.mutes(&idx, &firing[1].labels));
        // Recovery: api's alert resolved a moment ago, lb is still down but no longer
        // blocked (its own alert pending), shop is still blocked by lb: shop stays muted
        // for the hold, not after it.
        let mut lb_resolved = firing[1].clone();
        lb_resolved.ends_at = Some(now - Duration::from_secs(5));
        let recovering = [lb_resolved, firing[2].clone()];
        let idx = FiringIndex::new(recovering.iter(), now);
        assert!(on.mutes(&idx, &firing[2].labels));
        let idx = FiringIndex::new(recovering.iter(), now + DEPENDENCY_HOLD);
        assert!(!on.mutes(&idx, &firing[2].labels));
    }

    #[test]
    fn inhibit_rules_use_equal_and_never_self_inhibit() {
        let cfg: InhibitRuleConfig = serde_yaml_ng::from_str(
            "source_matchers: ['severity=\"critical\"']\ntarget_matchers: ['severity=~\"warning|critical\"']\nequal: [cluster]\n",
        )
        .unwrap();
        let ih = Inhibitor::new(
            vec![InhibitRule::build(&cfg, "inhibit_rules[0]").unwrap()],
            false,
        );
        let crit = alert(&[("severity", "critical"), ("cluster", "x")]);
        let idx = FiringIndex::new([&crit], std::time::SystemTime::now());
        assert!(ih.mutes(&idx, &l(&[("severity", "warning"), ("cluster", "x")])));
        assert!(!ih.mutes(&idx, &l(&[("severity", "warning"), ("cluster", "y")])));
        // The critical alert matches both sides: it does not mute itself.
        assert!(!ih.mutes(&idx, &crit.labels));
    }
}
