//! Alertmanager API v2: `POST <scheme>://<target><path_prefix>/api/v2/alerts` with a JSON
//! array of postable alerts, as Prometheus's notifier sends them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{DeliveryError, Sink};
use crate::alert::Alert;
use crate::scrape_config::HttpClientConfig;

/// RFC 3339 with milliseconds in UTC, as Alertmanager prints times.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One alert in Alertmanager's `PostableAlert` shape.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Start time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// End time, RFC 3339; absent for Go's zero time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// Link back to the rule.
    #[serde(rename = "generatorURL", skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
}

impl From<&Alert> for PostableAlert {
    fn from(a: &Alert) -> Self {
        PostableAlert {
            labels: a
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: a.annotations.clone(),
            starts_at: Some(rfc3339(a.starts_at)),
            ends_at: a.ends_at.map(rfc3339),
            generator_url: a.generator_url.clone(),
        }
    }
}

/// One Alertmanager instance.
pub struct AlertmanagerClient {
    url: String,
    timeout: Duration,
    http: HttpClientConfig,
    client: reqwest::Client,
}

impl AlertmanagerClient {
    /// A client posting to `base` (e.g. `http://127.0.0.1:9093` plus any path prefix);
    /// `/api/v2/alerts` is appended.
    pub fn new(
        base: &str,
        timeout: Duration,
        http: HttpClientConfig,
        client: reqwest::Client,
    ) -> AlertmanagerClient {
        let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
        AlertmanagerClient {
            url,
            timeout,
            http,
            client,
        }
    }
}

impl Sink for AlertmanagerClient {
    fn name(&self) -> &str {
        &self.url
    }

    fn deliver<'a>(
        &'a self,
        alerts: &'a [Alert],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<usize, DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let body: Vec<PostableAlert> = alerts.iter().map(PostableAlert::from).collect();
            let body =
                serde_json::to_vec(&body).map_err(|e| DeliveryError::Encode(e.to_string()))?;
            super::post_json(&self.client, &self.url, self.timeout, &self.http, body).await?;
            Ok(alerts.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_promql::Labels;
    use std::time::UNIX_EPOCH;

    #[test]
    fn postable_shape() {
        let a = Alert {
            labels: Labels::new([("alertname", "Down"), ("job", "x")]),
            annotations: BTreeMap::from([("summary".to_string(), "s".to_string())]),
            starts_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            ends_at: None,
            generator_url: "http://e/graph".into(),
        };
        let v = serde_json::to_value(PostableAlert::from(&a)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "labels": {"alertname": "Down", "job": "x"},
                "annotations": {"summary": "s"},
                "startsAt": "2023-11-14T22:13:20.123Z",
                "generatorURL": "http://e/graph"
            })
        );
    }
}
