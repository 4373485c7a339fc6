//! Generic webhooks for teams without Alertmanager: a JSON POST of the alert group in
//! Alertmanager's webhook payload shape (version 4), or a Slack-compatible `{"text": ...}`
//! body.
//!
//! The rule manager re-sends firing alerts every resend delay (Alertmanager deduplicates
//! them); a webhook has no such memory, so this sink does it: an alert is posted when it
//! starts firing, when it resolves, and again every `repeat_interval` while it keeps firing
//! (Alertmanager's default, 4h).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use lookout_promql::Labels;
use serde::{Deserialize, Serialize};

use super::alertmanager::rfc3339;
use super::{DeliveryError, Sink};
use crate::alert::Alert;
use crate::scrape_config::{HttpClientConfig, PromDuration};

/// The body a webhook receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Alertmanager's webhook payload (`version: "4"`).
    #[default]
    Alertmanager,
    /// `{"text": "..."}`, accepted by Slack, Mattermost, Rocket.Chat incoming webhooks.
    Slack,
}

/// One webhook in the `alerting.webhooks` list.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Name used as `receiver` in the payload and in metrics (default: the URL).
    #[serde(default)]
    pub name: Option<String>,
    /// Body format.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Per-request time limit (default 10s).
    #[serde(default)]
    pub timeout: Option<PromDuration>,
    /// How often a still-firing alert is posted again (default 4h).
    #[serde(default)]
    pub repeat_interval: Option<PromDuration>,
    /// Maximum alerts per payload, the rest counted in `truncatedAlerts` (0: no limit).
    #[serde(default)]
    pub max_alerts: usize,
    /// Basic authentication.
    #[serde(default)]
    pub basic_auth: Option<crate::scrape_config::BasicAuth>,
    /// Authorization header.
    #[serde(default)]
    pub authorization: Option<crate::scrape_config::Authorization>,
    /// In a receiver's `webhook_configs`: also notify about resolved alerts (default true,
    /// as Alertmanager). The legacy `webhooks` list always posts resolutions.
    #[serde(default)]
    pub send_resolved: Option<bool>,
}

/// One alert in the webhook payload.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Labels (external labels included).
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Start time.
    pub starts_at: String,
    /// End time (`0001-01-01T00:00:00Z` when unset, as Alertmanager sends it).
    pub ends_at: String,
    /// Link back to the rule.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// A stable hash of the labels (hex).
    pub fingerprint: String,
}

/// Alertmanager's webhook payload.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    /// Always `"4"`.
    pub version: String,
    /// Identifies the group.
    pub group_key: String,
    /// Alerts left out because of `max_alerts`.
    pub truncated_alerts: usize,
    /// `firing` if any alert fires, else `resolved`.
    pub status: String,
    /// The receiver name.
    pub receiver: String,
    /// Labels the group is keyed on (none: one group per delivery).
    pub group_labels: BTreeMap<String, String>,
    /// Labels all alerts share.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations all alerts share.
    pub common_annotations: BTreeMap<String, String>,
    /// The evaluator's external URL.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<WebhookAlert>,
}

/// Whether `a` is firing at `now` (its end, if any, lies after `now`).
pub(crate) fn is_firing(a: &Alert, now: SystemTime) -> bool {
    match a.ends_at {
        None => true,
        Some(end) => end > now,
    }
}

fn fingerprint(l: &Labels) -> String {
    let mut h = crate::scrape::target::Fnv::new();
    for (k, v) in l.iter() {
        h.write(k.as_bytes());
        h.write(&[0xff]);
        h.write(v.as_bytes());
        h.write(&[0xff]);
    }
    format!("{:016x}", h.0)
}

fn common<'a, I>(maps: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = &'a BTreeMap<String, String>>,
{
    let mut iter = maps.into_iter();
    let Some(first) = iter.next() else {
        return BTreeMap::new();
    };
    let mut out = first.clone();
    for m in iter {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

/// Builds the Alertmanager-shaped payload for `alerts`.
pub fn payload(
    receiver: &str,
    external_url: &str,
    alerts: &[Alert],
    max_alerts: usize,
    now: SystemTime,
) -> WebhookPayload {
    let key = format!("{{}}:{{receiver={receiver:?}}}");
    group_payload(
        receiver,
        external_url,
        &key,
        &Labels::default(),
        alerts,
        max_alerts,
        now,
    )
}

/// Builds the payload for one aggregation group of a route.
pub fn group_payload(
    receiver: &str,
    external_url: &str,
    group_key: &str,
    group_labels: &Labels,
    alerts: &[Alert],
    max_alerts: usize,
    now: SystemTime,
) -> WebhookPayload {
    let all: Vec<WebhookAlert> = alerts
        .iter()
        .map(|a| WebhookAlert {
            status: if is_firing(a, now) {
                "firing"
            } else {
                "resolved"
            }
            .to_string(),
            labels: a
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: a.annotations.clone(),
            starts_at: rfc3339(a.starts_at),
            ends_at: match a.ends_at {
                Some(t) if !is_firing(a, now) => rfc3339(t),
                _ => "0001-01-01T00:00:00Z".to_string(),
            },
            generator_url: a.generator_url.clone(),
            fingerprint: fingerprint(&a.labels),
        })
        .collect();
    let status = if all.iter().any(|a| a.status == "firing") {
        "firing"
    } else {
        "resolved"
    };
    let common_labels = common(all.iter().map(|a| &a.labels));
    let common_annotations = common(all.iter().map(|a| &a.annotations));
    let truncated = if max_alerts > 0 {
        all.len().saturating_sub(max_alerts)
    } else {
        0
    };
    let mut alerts_out = all;
    if max_alerts > 0 {
        alerts_out.truncate(max_alerts);
    }
    WebhookPayload {
        version: "4".into(),
        group_key: group_key.to_string(),
        truncated_alerts: truncated,
        status: status.into(),
        receiver: receiver.into(),
        group_labels: group_labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        common_labels,
        common_annotations,
        external_url: external_url.into(),
        alerts: alerts_out,
    }
}

/// Slack-style text: `[FIRING:2] HighLatency` then one line per alert with its summary.
pub fn slack_text(alerts: &[Alert], now: SystemTime) -> String {
    let firing = alerts.iter().filter(|a| is_firing(a, now)).count();
    let resolved = alerts.len() - firing;
    let mut names: Vec<&str> = alerts
        .iter()
        .filter_map(|a| a.labels.get("alertname"))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut text = String::new();
    if firing > 0 {
        text.push_str(&format!("[FIRING:{firing}]"));
    }
    if resolved > 0 {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!("[RESOLVED:{resolved}]"));
    }
    text.push(' ');
    text.push_str(&names.join(", "));
    for a in alerts {
        let state = if is_firing(a, now) {
            "firing"
        } else {
            "resolved"
        };
        let others: Vec<String> = a
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        text.push_str(&format!(
            "\n• {} ({state}) {}",
            a.labels.get("alertname").unwrap_or(""),
            others.join(" ")
        ));
        let detail = a
            .annotations
            .get("summary")
            .or_else(|| a.annotations.get("description"))
            .filter(|s| !s.is_empty());
        if let Some(d) = detail {
            text.push_str(&format!(": {d}"));
        }
    }
    text
}

#[derive(Clone, Copy, PartialEq)]
struct Sent {
    firing: bool,
    at: SystemTime,
}

/// A webhook receiver.
pub struct WebhookSink {
    name: String,
    url: String,
    format: WebhookFormat,
    timeout: Duration,
    repeat_interval: Duration,
    max_alerts: usize,
    external_url: String,
    http: HttpClientConfig,
    client: reqwest::Client,
    sent: Mutex<HashMap<Labels, Sent>>,
}

impl WebhookSink {
    /// A sink for `cfg`; `external_url` goes into the payload.
    pub fn new(cfg: &WebhookConfig, external_url: &str, client: reqwest::Client) -> WebhookSink {
        WebhookSink {
            name: cfg.name.clone().unwrap_or_else(|| cfg.url.clone()),
            url: cfg.url.clone(),
            format: cfg.format,
            timeout: cfg.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
            repeat_interval: cfg
                .repeat_interval
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(4 * 3600)),
            max_alerts: cfg.max_alerts,
            external_url: external_url.to_string(),
            http: HttpClientConfig {
                basic_auth: cfg.basic_auth.clone(),
                authorization: cfg.authorization.clone(),
                ..Default::default()
            },
            client,
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// The alerts of `batch` that are news for this webhook.
    fn news(&self, batch: &[Alert], now: SystemTime) -> Vec<Alert> {
        let Ok(sent) = self.sent.lock() else {
            return batch.to_vec();
        };
        batch
            .iter()
            .filter(|a| {
                let firing = is_firing(a, now);
                match sent.get(&a.labels) {
                    None => firing,
                    Some(s) if s.firing != firing => true,
                    Some(s) => {
                        firing
                            && now.duration_since(s.at).unwrap_or_default() >= self.repeat_interval
                    }
                }
            })
            .cloned()
            .collect()
    }

    fn record(&self, delivered: &[Alert], now: SystemTime) {
        if let Ok(mut sent) = self.sent.lock() {
            for a in delivered {
                if is_firing(a, now) {
                    sent.insert(
                        a.labels.clone(),
                        Sent {
                            firing: true,
                            at: now,
                        },
                    );
                } else {
                    sent.remove(&a.labels);
                }
            }
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn inhibitable(&self) -> bool {
        true
    }

    fn deliver<'a>(
        &'a self,
        alerts: &'a [Alert],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<usize, DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let now = SystemTime::now();
            let news = self.news(alerts, now);
            if news.is_empty() {
                return Ok(0);
            }
            let body = match self.format {
                WebhookFormat::Alertmanager => serde_json::to_vec(&payload(
                    &self.name,
                    &self.external_url,
                    &news,
                    self.max_alerts,
                    now,
                )),
                WebhookFormat::Slack => {
                    serde_json::to_vec(&serde_json::json!({"text": slack_text(&news, now)}))
                }
            }
            .map_err(|e| DeliveryError::Encode(e.to_string()))?;
            super::post_json(&self.client, &self.url, self.timeout, &self.http, body).await?;
            self.record(&news, now);
            Ok(news.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn alert(name: &str, ends: Option<SystemTime>) -> Alert {
        Alert {
            labels: Labels::new([("alertname", name), ("severity", "page")]),
            annotations: BTreeMap::from([("summary".to_string(), format!("{name} happened"))]),
            starts_at: UNIX_EPOCH + Duration::from_secs(1000),
            ends_at: ends,
            generator_url: String::new(),
        }
    }

    #[test]
    fn payload_status_and_common_labels() {
        let now = UNIX_EPOCH + Duration::from_secs(2000);
        let a = alert("A", Some(now + Duration::from_secs(60)));
        let b = alert("B", Some(UNIX_EPOCH + Duration::from_secs(1500)));
        let p = payload("r", "http://x", &[a, b], 0, now);
        assert_eq!(p.status, "firing");
        assert_eq!(p.alerts[0].status, "firing");
        assert_eq!(p.alerts[0].ends_at, "0001-01-01T00:00:00Z");
        assert_eq!(p.alerts[1].status, "resolved");
        assert_eq!(
            p.common_labels.get("severity").map(String::as_str),
            Some("page")
        );
        assert!(!p.common_labels.contains_key("alertname"));
        let t = slack_text(&[alert("A", None)], now);
        assert!(t.starts_with("[FIRING:1] A"), "{t}");
        assert!(t.contains("A happened"));
    }

    #[test]
    fn news_deduplicates_resends() {
        let cfg: WebhookConfig = serde_yaml_ng::from_str("url: http://127.0.0.1:1/").unwrap();
        let s = WebhookSink::new(&cfg, "", reqwest::Client::new());
        let now = SystemTime::now();
        let firing = alert("A", Some(now + Duration::from_secs(60)));
        assert_eq!(s.news(std::slice::from_ref(&firing), now).len(), 1);
        s.record(std::slice::from_ref(&firing), now);
        assert!(s.news(std::slice::from_ref(&firing), now).is_empty());
        let resolved = alert("A", Some(now - Duration::from_secs(1)));
        assert_eq!(s.news(std::slice::from_ref(&resolved), now).len(), 1);
        s.record(std::slice::from_ref(&resolved), now);
        assert!(s.news(&[resolved], now).is_empty());
    }
}
