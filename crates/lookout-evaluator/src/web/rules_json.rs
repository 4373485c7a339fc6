//! The bodies of `/api/v1/rules` and `/api/v1/alerts`, serialised straight from the rule
//! snapshots into one buffer, in the field order of Prometheus's `web/api/v1` structs.
//!
//! With hundreds of firing alerts these answers run to megabytes. Built as a
//! `serde_json::Value` tree first, every label and annotation became its own map node and
//! string: one answer for 338 alerts over kubernetes-mixin's rules held about 30 MB at its
//! peak, more than half of the evaluator's heap in remote mode (bench/vmalert). Written
//! directly, the answer costs little more than its own bytes.

use std::collections::BTreeMap;
use std::time::SystemTime;

use lookout_promql::Labels;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::alert::AlertState;
use crate::rules::status::{AlertSnapshot, AlertingRuleSnapshot, GroupSnapshot, RuleSnapshot};

/// Go's `time.Time` JSON: RFC 3339 with nanoseconds, or the zero time.
pub(crate) fn time_json(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => chrono::DateTime::<chrono::Utc>::from(t)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// A float as Go's `encoding/json` writes it: whole numbers without a fraction (`60`, not
/// `60.0`).
struct GoFloat(f64);

impl Serialize for GoFloat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.fract() == 0.0 && v.abs() < 1e15 {
            s.serialize_i64(v as i64)
        } else {
            s.serialize_f64(v)
        }
    }
}

/// Labels as a JSON object, in label order.
pub(crate) struct LabelsJson<'a>(pub &'a Labels);

impl Serialize for LabelsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Prometheus's `Alert` of the rules and alerts APIs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AlertJson<'a> {
    labels: LabelsJson<'a>,
    annotations: &'a BTreeMap<String, String>,
    state: &'static str,
    active_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_firing_since: Option<String>,
    value: String,
}

impl<'a> AlertJson<'a> {
    pub(crate) fn new(a: &'a AlertSnapshot) -> AlertJson<'a> {
        AlertJson {
            labels: LabelsJson(&a.labels),
            annotations: &a.annotations,
            state: a.state.as_str(),
            active_at: time_json(Some(a.active_at)),
            keep_firing_since: a.keep_firing_since.map(|t| time_json(Some(t))),
            value: super::api::format_float_e(a.value),
        }
    }
}

/// A rule's alerts, serialised as they are reached.
struct AlertList<'a>(&'a [AlertSnapshot]);

impl Serialize for AlertList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for a in self.0 {
            seq.serialize_element(&AlertJson::new(a))?;
        }
        seq.end()
    }
}

/// Prometheus's `AlertingRule`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertingRuleJson<'a> {
    state: &'static str,
    name: &'a str,
    query: &'a str,
    duration: GoFloat,
    keep_firing_for: GoFloat,
    labels: LabelsJson<'a>,
    annotations: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alerts: Option<AlertList<'a>>,
    health: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    last_error: &'a str,
    evaluation_time: GoFloat,
    last_evaluation: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl<'a> AlertingRuleJson<'a> {
    fn new(a: &'a AlertingRuleSnapshot, exclude_alerts: bool) -> AlertingRuleJson<'a> {
        AlertingRuleJson {
            state: a.state.as_str(),
            name: &a.common.name,
            query: &a.common.query,
            duration: GoFloat(a.hold_duration.as_secs_f64()),
            keep_firing_for: GoFloat(a.keep_firing_for.as_secs_f64()),
            labels: LabelsJson(&a.common.labels),
            annotations: &a.annotations,
            alerts: (!exclude_alerts).then_some(AlertList(&a.alerts)),
            health: a.common.health.as_str(),
            last_error: a.common.last_error.as_deref().unwrap_or(""),
            evaluation_time: GoFloat(a.common.evaluation_duration.as_secs_f64()),
            last_evaluation: time_json(a.common.last_evaluation),
            kind: "alerting",
        }
    }
}

/// Prometheus's `RecordingRule`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordingRuleJson<'a> {
    name: &'a str,
    query: &'a str,
    labels: LabelsJson<'a>,
    health: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    last_error: &'a str,
    evaluation_time: GoFloat,
    last_evaluation: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// Which rules of which groups an answer lists (the rules API's parameters).
pub(crate) struct RuleFilter<'a> {
    pub want_alert: bool,
    pub want_record: bool,
    pub exclude_alerts: bool,
    pub names: &'a std::collections::BTreeSet<&'a str>,
    pub group_names: &'a std::collections::BTreeSet<&'a str>,
    pub files: &'a std::collections::BTreeSet<&'a str>,
    /// A `type` was asked for: groups left without rules are left out.
    pub typed: bool,
}

impl RuleFilter<'_> {
    fn wants_group(&self, g: &GroupSnapshot) -> bool {
        (self.group_names.is_empty() || self.group_names.contains(g.name.as_str()))
            && (self.files.is_empty() || self.files.contains(g.file.as_str()))
    }

    fn wants_rule(&self, r: &RuleSnapshot) -> bool {
        let (kind_ok, name) = match r {
            RuleSnapshot::Alerting(a) => (self.want_alert, a.common.name.as_str()),
            RuleSnapshot::Recording(c) => (self.want_record, c.name.as_str()),
        };
        kind_ok && (self.names.is_empty() || self.names.contains(name))
    }

    fn lists_group(&self, g: &GroupSnapshot) -> bool {
        self.wants_group(g)
            && (g.rules.iter().any(|r| self.wants_rule(r))
                || (self.names.is_empty() && !self.typed))
    }
}

struct RuleList<'a> {
    rules: &'a [RuleSnapshot],
    filter: &'a RuleFilter<'a>,
}

impl Serialize for RuleList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for r in self.rules.iter().filter(|r| self.filter.wants_rule(r)) {
            match r {
                RuleSnapshot::Alerting(a) => {
                    seq.serialize_element(&AlertingRuleJson::new(a, self.filter.exclude_alerts))?
                }
                RuleSnapshot::Recording(c) => seq.serialize_element(&RecordingRuleJson {
                    name: &c.name,
                    query: &c.query,
                    labels: LabelsJson(&c.labels),
                    health: c.health.as_str(),
                    last_error: c.last_error.as_deref().unwrap_or(""),
                    evaluation_time: GoFloat(c.evaluation_duration.as_secs_f64()),
                    last_evaluation: time_json(c.last_evaluation),
                    kind: "recording",
                })?,
            }
        }
        seq.end()
    }
}

/// Prometheus's `RuleGroup`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupJson<'a> {
    name: &'a str,
    file: &'a str,
    rules: RuleList<'a>,
    interval: GoFloat,
    limit: usize,
    evaluation_time: GoFloat,
    last_evaluation: String,
}

struct GroupList<'a> {
    groups: &'a [GroupSnapshot],
    filter: &'a RuleFilter<'a>,
}

impl Serialize for GroupList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for g in self.groups.iter().filter(|g| self.filter.lists_group(g)) {
            seq.serialize_element(&GroupJson {
                name: &g.name,
                file: &g.file,
                rules: RuleList {
                    rules: &g.rules,
                    filter: self.filter,
                },
                interval: GoFloat(g.interval.as_secs_f64()),
                limit: g.limit,
                evaluation_time: GoFloat(g.evaluation_duration.as_secs_f64()),
                last_evaluation: time_json(g.last_evaluation),
            })?;
        }
        seq.end()
    }
}

/// `{"status":"success","data":{"<key>":<value>}}` in one buffer.
fn success_with(key: &str, value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"status\":\"success\",\"data\":{");
    // Writing into a Vec fails only on a serialiser error, which these types do not have.
    let _ = serde_json::to_writer(&mut out, key);
    out.push(b':');
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"}}");
    out
}

/// The rules API's body for `groups` as `filter` selects them.
pub(crate) fn rules_body(groups: &[GroupSnapshot], filter: &RuleFilter<'_>) -> Vec<u8> {
    success_with("groups", &GroupList { groups, filter })
}

/// Every active (pending or firing) alert of the alerting rules of `groups`.
struct ActiveAlerts<'a>(&'a [GroupSnapshot]);

impl Serialize for ActiveAlerts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for g in self.0 {
            for r in &g.rules {
                if let RuleSnapshot::Alerting(a) = r {
                    for x in a.alerts.iter().filter(|x| x.state != AlertState::Inactive) {
                        seq.serialize_element(&AlertJson::new(x))?;
                    }
                }
            }
        }
        seq.end()
    }
}

/// The alerts API's body.
pub(crate) fn alerts_body(groups: &[GroupSnapshot]) -> Vec<u8> {
    success_with("alerts", &ActiveAlerts(groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_as_go_writes_them() {
        let j = |v| serde_json::to_string(&GoFloat(v)).unwrap();
        assert_eq!(j(60.0), "60");
        assert_eq!(j(0.0), "0");
        assert_eq!(j(0.25), "0.25");
        assert_eq!(j(1.5e-7), "1.5e-7");
    }
}
